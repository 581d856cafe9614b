"""Prometheus exposition for the control plane: ``install_metrics(app)`` serves ``GET /metrics``.

Each app gets its own :class:`ControlMetrics` with its own ``CollectorRegistry`` (never the
process-global one), so several apps in one process (tests) do not clash. What is measured:

- HTTP requests by route *template* (``/v1/calls/{call_id}``, never the raw path), method and
  status class (``2xx`` ... ``5xx``), and their latency as a histogram by route template and
  method: a pure ASGI middleware, a dictionary look-up and two lock-protected adds per request;
- hooks the API and the signalling code call (:func:`metrics_of`): WebSocket connections open,
  signalling messages relayed, calls created, call transitions by the status reached, tokens
  issued by role and tokens revoked;
- relay nodes known / healthy / draining by region, read from the store when ``/metrics`` is
  requested (collectors are synchronous, so the endpoint awaits ``store.list_nodes()`` first and
  the collector yields those figures);
- database latency by operation (``read``/``write``), and what the store recorded: calls
  created, state changes by the status reached, tokens issued by role and revoked, signalling
  messages. :func:`instrument_store` counts these where they are written, at the store's
  boundary, so no code path that stores a call or a token can forget to count it (a state
  change another process made is counted by that process);
- retention purges and audit entries (control/privacy.py registers those on this registry);
- the web front: sign-ins by outcome, console sessions live (from the store, at scrape) and
  revoked by reason, callback requests and those marked done, signalling candidates dropped on
  relay-only links by type, presence changes, throttle refusals and the throttle's table size,
  and the configured limits themselves (``config_limit{name}``).

No label grows with users, calls, tokens or addresses: routes are the app's own templates
(anything unmatched is ``unmatched``), methods outside the usual seven are ``other``, statuses
are the call states, roles are ``visitor``/``staff``/``ice``, and at most :data:`MAX_REGIONS`
regions are named (the rest add up under ``other``).

The endpoint is not in the OpenAPI schema and needs no credential, so ``create_app`` does not
serve it on the API's listener (``GET /metrics`` there is a 404): ``clickacall control``
serves it on a listener of its own, ``--metrics HOST:PORT`` (loopback by default, like the
relay's), through :func:`metrics_listener`.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control.models import Call, CallStatus, RelayNode, Role, SessionToken
from control.selection import HEARTBEAT_TIMEOUT, healthy
from control.store import StatementOp, Store

log = logging.getLogger("clickacall.control.metrics")

PREFIX = "clickacall_control"
PATH = "/metrics"
LISTENER = "clickacall.metrics_listener"  # scope key set by metrics_listener()
UNMATCHED = "unmatched"
OTHER = "other"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_REGIONS = 64
ICE = "ice"  # the role label of raw ICE credentials (tokens with no role)
TOKEN_ROLES = (Role.VISITOR.value, Role.STAFF.value, ICE)
# control-plane requests are a few ms; the tail buckets catch a stalled database
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# statements are sub-millisecond on SQLite, a few ms on PostgreSQL over a network
DB_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    5.0,
)
DB_OPS = ("read", "write")

# refused: bad origin or form; wrong_code: a wrong two-factor code
SIGNIN_OUTCOMES = ("ok", "wrong", "wrong_code", "throttled", "refused")
SESSION_END_REASONS = ("signout", "staff", "password")  # staff: deactivated or deleted
CALLBACK_VIA = ("call", "link")  # after a call, or with no call possible
CANDIDATE_TYPES = ("host", "srflx", "prflx", "mdns", "other")
PRESENCE_CHANGES = (
    ("available", "manual"),
    ("away", "manual"),
    ("away", "missed"),
    ("wrapup", "call"),
    ("wrapup", "ready"),
)
THROTTLED = ("signin", "code", "callback")
WS_CLOSE_REASONS = ("revoked", "expired", "session", "staff")  # why a socket was closed
# node_auth / enrolment refusals: the shared secret for an enrolled id, another node's
# credential, an unknown credential, a summary seq too far past the node's highest
NODE_REFUSALS = ("enrolled", "wrong_node", "bad_credential", "seq_jump")
# the public click refused: a visitor's or a link's token bucket, a ringing cap
CLICK_REFUSALS = ("visitor", "link", "ringing_link", "ringing_tenant")
# refused before authentication (control/bounds.py): a request body over the limit, too many
# connections (in all, from one /24 or /48), a WebSocket message over the limit, too many unauthenticated WebSockets (in
# total, from one /24 or /48), a WebSocket that did not authenticate in time, a request head
# not complete in time (slow-loris)
BOUND_REFUSALS = (
    "body_too_large",
    "connections",
    "connections_prefix",
    "ws_too_big",
    "ws_unauth_total",
    "ws_unauth_prefix",
    "ws_auth_timeout",
    "head_timeout",
)

NodeCounts = dict[str, tuple[int, int, int]]  # region -> (known, healthy, draining)


def node_counts(
    nodes: Iterable[RelayNode], now: float, heartbeat_timeout: float = HEARTBEAT_TIMEOUT
) -> NodeCounts:
    """Per region: nodes registered, nodes with a recent heartbeat, and of those the ones
    draining. Past :data:`MAX_REGIONS` regions (sorted) the rest are summed as ``other``."""
    counts: dict[str, list[int]] = {}
    for node in nodes:
        row = counts.setdefault(node.region, [0, 0, 0])
        row[0] += 1
        if healthy(node, now, heartbeat_timeout):
            row[1] += 1
            row[2] += bool(node.draining)
    out: NodeCounts = {}
    for i, region in enumerate(sorted(counts)):
        k, h, d = counts[region]
        if i >= MAX_REGIONS:
            ok, oh, od = out.get(OTHER, (0, 0, 0))
            k, h, d, region = k + ok, h + oh, d + od, OTHER
        out[region] = (k, h, d)
    return out


class NodeCollector(Collector):
    """Yields the relay-node figures last computed by :meth:`ControlMetrics.refresh`."""

    def __init__(self) -> None:
        self.counts: NodeCounts = {}

    def collect(self) -> Iterator[Metric]:
        known = GaugeMetricFamily(
            f"{PREFIX}_relay_nodes", "Relay nodes registered, by region", labels=["region"]
        )
        up = GaugeMetricFamily(
            f"{PREFIX}_relay_nodes_healthy",
            "Relay nodes whose last heartbeat is recent (draining ones included), by region",
            labels=["region"],
        )
        draining = GaugeMetricFamily(
            f"{PREFIX}_relay_nodes_draining",
            "Healthy relay nodes that refuse new allocations, by region",
            labels=["region"],
        )
        for region, (k, h, d) in sorted(self.counts.items()):
            known.add_metric([region], k)
            up.add_metric([region], h)
            draining.add_metric([region], d)
        yield known
        yield up
        yield draining


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else OTHER


def route_template(scope: Scope, root_path: str = "") -> str:
    """The template of the route that served ``scope``, as the router recorded it, behind the
    prefix of the mount it sits in (what a mount added to the server's ``root_path``); a
    mounted app that records no route is ``<prefix>/{path}``; nothing matched: ``unmatched``."""
    mounted = str(scope.get("root_path", ""))
    prefix = ""
    if mounted != root_path and mounted.startswith(root_path):
        prefix = mounted[len(root_path) :]
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if path:
        return prefix + str(path)
    return prefix + "/{path}" if prefix else UNMATCHED


class ControlMetrics:
    """One app's metrics. The API and the signalling code call the hook methods (or use the
    metric objects directly, e.g. ``metrics_of(app).ws_open.inc()``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_http_requests",
            "HTTP requests by route template, method and status class",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "HTTP request latency (to the end of the response) by route template and method",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ws_open = Gauge(
            f"{PREFIX}_websocket_connections", "WebSocket connections open now", registry=r
        )
        self.signalling_messages = Counter(
            f"{PREFIX}_signalling_messages",
            "Signalling messages relayed between the parties of calls",
            registry=r,
        )
        self.calls_created = Counter(
            f"{PREFIX}_calls_created", "Calls created (visitor clicks admitted)", registry=r
        )
        self.call_transitions = Counter(
            f"{PREFIX}_call_transitions",
            "Call state changes, by the status reached",
            ["status"],
            registry=r,
        )
        self.tokens_issued = Counter(
            f"{PREFIX}_tokens_issued",
            "Session tokens issued, by role (ice: raw ICE credentials)",
            ["role"],
            registry=r,
        )
        self.tokens_revoked = Counter(
            f"{PREFIX}_tokens_revoked", "Session tokens revoked", registry=r
        )
        self.db_latency = Histogram(
            f"{PREFIX}_db_query_duration_seconds",
            "Database statement latency by operation (read, write), failures included",
            ["op"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.db_errors = Counter(
            f"{PREFIX}_db_errors",
            "Database statements that failed, by operation",
            ["op"],
            registry=r,
        )
        self.node_enrolments = Counter(
            f"{PREFIX}_node_enrolments",
            "Relay nodes enrolled (given a credential of their own)",
            registry=r,
        )
        self.node_refusals = Counter(
            f"{PREFIX}_node_refusals",
            "Relay node requests refused: the shared secret for an enrolled id, another "
            "node's or an unknown credential, a summary seq jump",
            ["reason"],
            registry=r,
        )
        for reason in NODE_REFUSALS:
            self.node_refusals.labels(reason=reason)
        self.db_busy = Counter(
            f"{PREFIX}_db_busy",
            "Requests answered 503 with Retry-After because the database stayed locked",
            registry=r,
        )
        self.store_errors = Counter(
            f"{PREFIX}_metrics_store_errors",
            "Scrapes that could not read the relay nodes from the store",
            registry=r,
        )
        self.signins = Counter(
            f"{PREFIX}_signins",
            "Console sign-in attempts by outcome (ok, wrong, wrong_code, throttled, refused)",
            ["outcome"],
            registry=r,
        )
        self.web_sessions = Gauge(
            f"{PREFIX}_web_sessions",
            "Console sessions live (not revoked, expired or idle), read at scrape",
            registry=r,
        )
        self.web_sessions_revoked = Counter(
            f"{PREFIX}_web_sessions_revoked",
            "Console sessions ended, by reason (signout; staff: deactivated or deleted; password)",
            ["reason"],
            registry=r,
        )
        self.callbacks_requested = Counter(
            f"{PREFIX}_callbacks_requested",
            "Callback requests left by visitors, after a call or with none possible",
            ["via"],
            registry=r,
        )
        self.callbacks_done = Counter(
            f"{PREFIX}_callbacks_done", "Callback requests marked done by staff", registry=r
        )
        self.candidates_dropped = Counter(
            f"{PREFIX}_signalling_candidates_dropped",
            "ICE candidates kept from the other party on relay-only links, by type",
            ["type"],
            registry=r,
        )
        self.presence_changes = Counter(
            f"{PREFIX}_presence_changes",
            "Staff presence changes: available/away (manual, missed) and wrap-up (call, ready)",
            ["status", "reason"],
            registry=r,
        )
        self.throttle_refusals = Counter(
            f"{PREFIX}_throttle_refusals",
            "Requests refused by the throttle (sign-in, two-factor codes, anonymous callback requests)",
            ["what"],
            registry=r,
        )
        self.click_refusals = Counter(
            f"{PREFIX}_click_refusals",
            "Visitor clicks refused (429), by the limit hit: visitor, link, ringing_link, "
            "ringing_tenant",
            ["reason"],
            registry=r,
        )
        self.bound_refusals = Counter(
            f"{PREFIX}_bound_refusals",
            "Requests and WebSockets refused before authentication, by the bound hit",
            ["reason"],
            registry=r,
        )
        self.ws_unauthenticated = Gauge(
            f"{PREFIX}_websockets_unauthenticated",
            "WebSockets accepted that have not authenticated yet",
            registry=r,
        )
        self.throttle_keys = Gauge(
            f"{PREFIX}_throttle_keys",
            "Keys (emails, client prefixes) the throttle remembers, read at scrape",
            registry=r,
        )
        self.ws_closes = Counter(
            f"{PREFIX}_websocket_closes",
            "WebSocket connections closed because their person may no longer be there, by"
            " reason (revoked, expired: the token; session: the console session ended; staff:"
            " the member deactivated or deleted)",
            ["reason"],
            registry=r,
        )
        for reason in WS_CLOSE_REASONS:
            self.ws_closes.labels(reason=reason)
        self.revocation_window_hits = Counter(
            f"{PREFIX}_revocations_window_hits",
            "Heartbeats whose revocation cursor was older than --revocation-window (the node"
            " got the revocations that could still matter instead)",
            registry=r,
        )
        self.limits = Gauge(
            f"{PREFIX}_config_limit",
            "Configured limits (seconds or counts, as the name says)",
            ["name"],
            registry=r,
        )
        for outcome in SIGNIN_OUTCOMES:
            self.signins.labels(outcome=outcome)
        for reason in SESSION_END_REASONS:
            self.web_sessions_revoked.labels(reason=reason)
        for via in CALLBACK_VIA:
            self.callbacks_requested.labels(via=via)
        for kind in CANDIDATE_TYPES:
            self.candidates_dropped.labels(type=kind)
        for status, reason in PRESENCE_CHANGES:
            self.presence_changes.labels(status=status, reason=reason)
        for what in THROTTLED:
            self.throttle_refusals.labels(what=what)
        for reason in CLICK_REFUSALS:
            self.click_refusals.labels(reason=reason)
        for reason in BOUND_REFUSALS:
            self.bound_refusals.labels(reason=reason)
        self.nodes = NodeCollector()
        r.register(self.nodes)
        for status in CallStatus:  # every series exists from the start, at 0
            self.call_transitions.labels(status=status.value)
        for role in TOKEN_ROLES:
            self.tokens_issued.labels(role=role)
        for op in DB_OPS:
            self.db_latency.labels(op=op)
            self.db_errors.labels(op=op)
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    # --- hooks ------------------------------------------------------------------------------

    def call_created(self) -> None:
        self.calls_created.inc()

    def call_transition(self, status: CallStatus | str) -> None:
        """A call reached ``status`` (a :class:`CallStatus`; anything else is a ValueError)."""
        self.call_transitions.labels(status=CallStatus(status).value).inc()

    def token_issued(self, role: Role | str | None, n: int = 1) -> None:
        """``role`` None is a raw ICE credential (``POST /v1/credentials``)."""
        self.tokens_issued.labels(role=ICE if role is None else Role(role).value).inc(n)

    def token_revoked(self, n: int = 1) -> None:
        if n > 0:
            self.tokens_revoked.inc(n)

    def signalling_message(self, n: int = 1) -> None:
        self.signalling_messages.inc(n)

    def candidate_dropped(self, kind: str) -> None:
        self.candidates_dropped.labels(type=kind if kind in CANDIDATE_TYPES else OTHER).inc()

    def signin(self, outcome: str) -> None:
        self.signins.labels(outcome=outcome).inc()

    def presence(self, status: str, reason: str, n: int = 1) -> None:
        if (status, reason) in PRESENCE_CHANGES and n > 0:
            self.presence_changes.labels(status=status, reason=reason).inc(n)

    def set_limits(self, limits: dict[str, float]) -> None:
        for name, value in limits.items():
            self.limits.labels(name=name).set(value)

    def ws_closed(self, reason: str) -> None:
        """A socket was closed for ``reason`` (one of :data:`WS_CLOSE_REASONS`)."""
        if reason in WS_CLOSE_REASONS:
            self.ws_closes.labels(reason=reason).inc()

    @contextmanager
    def websocket(self) -> Iterator[None]:
        """``with metrics.websocket():`` around a connection's life keeps ``ws_open`` right
        whichever way the connection ends."""
        self.ws_open.inc()
        try:
            yield
        finally:
            self.ws_open.dec()

    # --- HTTP -------------------------------------------------------------------------------

    def observe(self, scope: Scope, status: int, seconds: float, root_path: str = "") -> None:
        route = route_template(scope, root_path)
        method = str(scope.get("method", ""))
        if method not in METHODS:
            method = OTHER
        key = (route, method, _status_class(status))
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(route=route, method=method, status=key[2]),
                self.latency.labels(route=route, method=method),
            )
        children[0].inc()
        children[1].observe(seconds)

    # --- scrape -----------------------------------------------------------------------------

    async def refresh(self, app: Starlette) -> None:
        """Recompute the relay-node figures from the app's store (none while it is closed)."""
        ctx = getattr(app.state, "ctx", None)
        store = getattr(ctx, "store", None)
        if store is None:
            self.nodes.counts = {}
            return
        settings = getattr(ctx, "settings", None)
        timeout = float(getattr(settings, "heartbeat_timeout", HEARTBEAT_TIMEOUT))
        idle = float(getattr(settings, "session_idle", 3600.0))
        clock: Callable[[], float] = getattr(app.state, "clock", time.time)
        throttle = getattr(ctx, "throttle", None)
        if throttle is not None:
            self.throttle_keys.set(len(throttle))
        now = float(clock())
        try:
            nodes = await store.list_nodes()
            self.web_sessions.set(await store.count_web_sessions(now, now - idle))
        except Exception as e:  # a broken database must not break the scrape
            log.warning("metrics: cannot read relay nodes or sessions: %s", e)
            self.store_errors.inc()
            self.nodes.counts = {}  # absent beats stale
            return
        self.nodes.counts = node_counts(nodes, now, timeout)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_of(app: Starlette) -> ControlMetrics:
    """The app's metrics; created on first use, so hooks work whether or not
    :func:`install_metrics` ran (then nothing serves them)."""
    m = getattr(app.state, "metrics", None)
    if not isinstance(m, ControlMetrics):
        m = ControlMetrics()
        app.state.metrics = m
    return m


class MetricsMiddleware:
    """Counts and times every HTTP request; WebSocket and lifespan scopes pass through."""

    def __init__(self, app: ASGIApp, metrics: ControlMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        root_path = str(scope.get("root_path", ""))  # before any mount extends it
        status = 500  # an exception before the response starts becomes a 500 outside

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope, status, time.perf_counter() - start, root_path)


async def _serve(request: Request) -> Response:
    if not (request.scope.get(LISTENER) or getattr(request.app.state, "metrics_public", True)):
        raise HTTPException(404, "Not Found")  # only on the metrics listener
    m = metrics_of(request.app)
    await m.refresh(request.app)
    return Response(m.exposition(), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, *, public: bool = True) -> ControlMetrics:
    """Add ``GET /metrics`` (outside the OpenAPI schema) and the request middleware to
    ``app``; call it while building the app, before it starts (``create_app`` does, with
    ``public=False``: then only :func:`metrics_listener` serves it; a second call changes
    nothing). Returns the app's metrics."""
    m = metrics_of(app)
    if getattr(app.state, "metrics_installed", False):
        return m
    app.state.metrics_installed = True
    app.state.metrics_public = public
    app.add_middleware(MetricsMiddleware, metrics=m)
    # an API route (not a plain Starlette one), so the router records its template too
    app.router.add_api_route(
        PATH, _serve, methods=["GET"], include_in_schema=False, response_class=Response
    )
    return m


def metrics_listener(app: ASGIApp) -> ASGIApp:
    """The ASGI app of the separate metrics listener (``--metrics``): ``GET /metrics`` is
    handed to ``app`` (so it is counted like any request) marked as arriving here, anything
    else is a 404. Lifespan events are not passed on: the API's server runs those."""

    async def listener(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return
        if scope["type"] == "http" and scope.get("path") == PATH:
            await app({**scope, LISTENER: True}, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        await Response("Not Found", status_code=404, media_type="text/plain")(scope, receive, send)

    return listener


# --- the store's boundary ---------------------------------------------------------------------

_INSTRUMENTED: weakref.WeakSet[Store] = weakref.WeakSet()


def instrument_store(store: Store, m: ControlMetrics) -> None:
    """Time ``store``'s statements and count what it records, by wrapping this one instance's
    methods (the class, and any other store, stay as they are; a second call does nothing).

    The store reports each statement to :meth:`~control.store.Store.observe_statements`,
    which feeds the latency histogram and the error counter; ``create_call``,
    ``update_call`` (when it changed the call), ``save_token``, ``revoke_token``,
    ``revoke_call_tokens``, ``revoke_tokens_of`` and ``add_signal`` feed the counters, after
    they succeed; ``set_staff_fields`` and ``miss_rings`` the presence changes,
    ``request_callback`` and ``close_callback`` the callbacks."""
    if store in _INSTRUMENTED:
        return
    _INSTRUMENTED.add(store)
    latency = {op: m.db_latency.labels(op=op) for op in DB_OPS}
    errors = {op: m.db_errors.labels(op=op) for op in DB_OPS}

    def statement(op: StatementOp, seconds: float, failed: bool) -> None:
        latency[op].observe(seconds)
        if failed:
            errors[op].inc()

    store.observe_statements(statement)

    create_call, update_call = store.create_call, store.update_call
    save_token, revoke_token = store.save_token, store.revoke_token
    revoke_call_tokens, add_signal = store.revoke_call_tokens, store.add_signal
    revoke_tokens_of, set_staff_fields = store.revoke_tokens_of, store.set_staff_fields
    miss_rings, request_callback = store.miss_rings, store.request_callback
    close_callback = store.close_callback

    async def created(call: Call) -> None:
        await create_call(call)
        m.call_created()

    async def updated(call: Call, expect_status: CallStatus) -> bool:
        changed = await update_call(call, expect_status)
        if changed and call.status is not expect_status:
            m.call_transition(call.status)
        return changed

    async def saved(token: SessionToken) -> None:
        await save_token(token)
        m.token_issued(token.role)

    async def revoked(token_id: str, at: float) -> bool:
        done = await revoke_token(token_id, at)
        m.token_revoked(int(done))
        return done

    async def call_revoked(tenant_id: str, call_id: str, at: float) -> int:
        n = await revoke_call_tokens(tenant_id, call_id, at)
        m.token_revoked(n)
        return n

    async def signalled(*args: Any, **kw: Any) -> None:
        await add_signal(*args, **kw)
        m.signalling_message()

    async def tokens_of_revoked(*args: Any, **kw: Any) -> list[SessionToken]:
        out = await revoke_tokens_of(*args, **kw)
        m.token_revoked(len(out))
        return out

    async def staff_set(tenant_id: str, staff_id: str, changes: dict[str, Any]) -> bool:
        done = await set_staff_fields(tenant_id, staff_id, changes)
        if done and "presence" in changes:
            m.presence(str(changes["presence"]), "manual")
        if done and "wrapup_until" in changes:
            m.presence("wrapup", "ready" if changes["wrapup_until"] is None else "call")
        return done

    async def rings_missed(tenant_id: str, staff_ids: list[str], away_after: int) -> list[str]:
        away = await miss_rings(tenant_id, staff_ids, away_after)
        m.presence("away", "missed", len(away))
        return away

    async def callback_requested(*args: Any, **kw: Any) -> bool:
        done = await request_callback(*args, **kw)
        if done:
            m.callbacks_requested.labels(via="call").inc()
        return done

    async def callback_closed(*args: Any, **kw: Any) -> bool:
        done = await close_callback(*args, **kw)
        if done:
            m.callbacks_done.inc()
        return done

    store.revoke_tokens_of = tokens_of_revoked  # type: ignore[method-assign]
    store.set_staff_fields = staff_set  # type: ignore[method-assign]
    store.miss_rings = rings_missed  # type: ignore[method-assign]
    store.request_callback = callback_requested  # type: ignore[method-assign]
    store.close_callback = callback_closed  # type: ignore[method-assign]
    store.create_call = created  # type: ignore[method-assign]
    store.update_call = updated  # type: ignore[method-assign]
    store.save_token = saved  # type: ignore[method-assign]
    store.revoke_token = revoked  # type: ignore[method-assign]
    store.revoke_call_tokens = call_revoked  # type: ignore[method-assign]
    store.add_signal = signalled  # type: ignore[method-assign]
