"""WebSocket signalling: a call's two parties exchange SDP and ICE candidates, staff consoles
hear calls ring and stop ringing.

Both sockets authenticate with their first message, ``{"type": "auth", "token": "..."}``, sent
within ``--ws-auth-timeout`` seconds (browsers cannot set headers on a WebSocket, and a token in
the URL would end up in proxies' logs). Until then a socket holds one of the few places for
unauthenticated sockets (:class:`control.bounds.Pending`, in all and per client /24 or /48);
with none free the handshake is refused.

``/v1/calls/{call_id}/signal`` (the ``signal`` path of the click and answer responses)
    The visitor (its visitor token, while the call rings or is answered) and the staff member
    who answered (the call token the answer returned). Each text message is a JSON object whose
    ``type`` is one of :data:`SIGNAL_TYPES`; it is stored and delivered to the other party only,
    with ``"from"`` and ``"seq"`` added. Messages wait in the database until the other party
    connects, so the visitor may send its offer while the call still rings, and a party that
    reconnects passes ``"after": <last seq seen>`` in its auth message to get only what it
    missed. The server also sends ``{"type": "ready", ...}`` after auth, ``{"type": "call",
    "status": ...}`` on every state change of the call, and closes with 1000 once the call is
    over. ``{"type": "ping"}`` gets ``{"type": "pong"}``.

``/v1/staff/events``
    A staff token (console or call). Sends ``{"type": "ringing", "calls": [...]}`` on connect,
    then ``{"type": "ring", ...}`` for each new call ringing this member and ``{"type":
    "call", "call_id", "status"}`` when one of the calls ringing them changes (answered by a
    colleague, missed, abandoned...), so every console stops ringing at once. It also sends
    ``{"type": "presence", "status", "wrapup_until", "reason"}`` and ``{"type": "callbacks",
    "count"}`` on connect and on every change, takes ``{"type": "presence", "status"}`` and
    ``{"type": "ready"}``, marks its member seen every :data:`TOUCH_EVERY` seconds, and closes
    (4401) once its token is revoked or expires, its web session ends or its member may no
    longer act: at once on the revocation, sign-out or deactivation, and at the latest at the
    next periodic re-check. ``{"type": "auth", "token": ...}`` with a fresh token of the same
    member renews the socket's token (answered ``{"type": "renewed", "expires_at"}``).

On a relay-only link (the default) a call's signalling passes relay candidates only
(:mod:`control.candidates`), so neither party learns the other's address.

Processes share nothing but the database: messages are rows, wake-ups are the store's
notifications (PostgreSQL LISTEN/NOTIFY), so the visitor and the staff member may be connected
to different control-plane processes. Bad input is answered with ``{"type": "error", "code",
"message"}``; a client that keeps sending it, floods, or sends oversized or binary frames is
disconnected with the close codes below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from control import calls as machine
from control import candidates
from control.api.console import open_callbacks
from control.api.deps import ApiError, Ctx, acting_staff, check_session, ctx_of, now_of
from control.api.relays import visitor_prefix
from control.bounds import Pending
from control.lifecycle import (
    active_staff,
    call_channel,
    end_wrapup,
    ringing_for,
    set_presence,
    settle,
    signal_posted,
    tenant_channel,
)
from control.metrics import metrics_of
from control.models import FINAL_STATUSES, Call, CallStatus, Presence, Role, SessionToken, Staff
from control.schemas import RingingOut
from control.store import Invalid, Store, StoreError, Subscription

log = logging.getLogger("clickacall.control.signalling")

PENDING: Final = "clickacall.pending"  # the scope key of a socket's pending place (its prefix)
MAX_MESSAGE: Final = 65536  # bytes of one text frame
SIGNAL_TYPES: Final = frozenset(
    {"offer", "answer", "candidate", "end-of-candidates", "bye", "reconnecting", "reconnected"}
)
MAX_ERRORS: Final = 20  # bad messages tolerated on one connection
TOUCH_EVERY: Final = 30.0  # a console socket marks its member (and session) seen this often
RATE: Final = 50.0  # messages per second, sustained ...
BURST: Final = 200.0  # ... after a burst this large (ICE trickle sends many at once)

# close codes
NORMAL: Final = 1000
UNSUPPORTED: Final = 1003
POLICY: Final = 1008
TOO_BIG: Final = 1009
RETRY: Final = 1011  # server-side trouble: reconnect
TRY_LATER: Final = 1013
BAD_REQUEST: Final = 4400
UNAUTHORIZED: Final = 4401
FORBIDDEN: Final = 4403
NOT_FOUND: Final = 4404
AUTH_TIMED_OUT: Final = 4408
CALL_OVER: Final = 4409

_CLOSE_FOR_STATUS: Final = {401: UNAUTHORIZED, 403: FORBIDDEN, 404: NOT_FOUND, 409: CALL_OVER}

router = APIRouter()


class Closing(Exception):
    """End the connection with ``code`` and ``reason`` (sent as a last error message too).
    ``why`` (one of :data:`control.metrics.WS_CLOSE_REASONS`) counts a close that throws a
    person out: their token revoked or expired, their session over, the member gone."""

    def __init__(
        self, code: int, reason: str, error: str = "closed", why: str | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.error = error
        self.why = why


def _revoked() -> Closing:
    return Closing(UNAUTHORIZED, "this session token was revoked", "unauthorized", "revoked")


class Bucket:
    """A token bucket: ``take()`` is False once the sender is over its rate."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.level = burst
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now
        if self.level < 1.0:
            return False
        self.level -= 1.0
        return True


def _status_event(call: Call, staff_name: str | None = None) -> dict[str, Any]:
    return {
        "type": "call",
        "call_id": call.id,
        "status": str(call.status),
        "answered_at": call.answered_at,
        "ended_at": call.ended_at,
        "end_reason": call.end_reason,
        "staff_name": staff_name,  # who answered, for the visitor
        "media": None if call.media is None else str(call.media),
    }


async def _staff_name(ctx: Ctx, call: Call) -> str | None:
    if not call.answered_by:
        return None
    member = await ctx.db().get_staff(call.tenant_id, call.answered_by)
    return None if member is None else member.name


async def _send(ws: WebSocket, message: dict[str, Any]) -> None:
    await ws.send_text(json.dumps(message, separators=(",", ":")))


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.client_state is WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):  # the peer may be gone already
            await ws.close(code, reason[:120])


async def _receive_json(ws: WebSocket) -> dict[str, Any] | None:
    """The next message as a JSON object; None when the client left. Closing on binary or
    oversized frames; ValueError (answered, not fatal) for text that is not a JSON object."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        if message.get("code") == TOO_BIG:  # the server's ws_max_size, before we saw it
            metrics_of(ws.app).bound_refusals.labels(reason="ws_too_big").inc()
        return None
    text = message.get("text")
    if text is None:
        raise Closing(UNSUPPORTED, "only text frames are accepted", "unsupported")
    if len(text) > MAX_MESSAGE or len(text.encode()) > MAX_MESSAGE:
        raise Closing(TOO_BIG, f"messages are limited to {MAX_MESSAGE} bytes", "too_big")
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


async def _authenticate(ws: WebSocket, ctx: Ctx) -> tuple[SessionToken, dict[str, Any]]:
    try:
        hello = await asyncio.wait_for(_receive_json(ws), ctx.settings.ws_auth_timeout)
    except TimeoutError:
        metrics_of(ws.app).bound_refusals.labels(reason="ws_auth_timeout").inc()
        raise Closing(AUTH_TIMED_OUT, "no auth message in time", "unauthorized") from None
    except ValueError as e:
        raise Closing(BAD_REQUEST, f"the first message must be auth ({e})", "invalid") from None
    finally:
        _authenticated(ws)  # or refused: either way no longer pending
    if hello is None:
        raise WebSocketDisconnect(NORMAL)
    token = hello.get("token")
    if hello.get("type") != "auth" or not isinstance(token, str):
        raise Closing(
            BAD_REQUEST, 'the first message must be {"type": "auth", "token": ...}', "invalid"
        )
    return await check_session(ctx, token, now_of(ws)), hello


def _pending(ws: WebSocket) -> Pending | None:
    found = getattr(ws.app.state, "pending", None)
    return found if isinstance(found, Pending) else None


def _authenticated(ws: WebSocket) -> None:
    """Give back the socket's place among the unauthenticated (once)."""
    prefix = ws.scope.pop(PENDING, None)
    pending = _pending(ws)
    if prefix is not None and pending is not None:
        pending.leave(prefix)
        metrics_of(ws.app).ws_unauthenticated.set(pending.count)


async def _serve(ws: WebSocket, run: Any) -> None:
    """Accept (if a place among the unauthenticated is free), run the handler, and turn its
    outcome into the right close."""
    pending = _pending(ws)
    metrics = metrics_of(ws.app)
    if pending is not None:
        prefix = visitor_prefix(ws) or "-"
        refused = pending.enter(prefix)
        if refused is not None:
            metrics.bound_refusals.labels(reason=refused).inc()
            await ws.close(TRY_LATER)  # before the accept: the handshake is refused
            return
        ws.scope[PENDING] = prefix
        metrics.ws_unauthenticated.set(pending.count)
    try:
        await ws.accept()
        with metrics.websocket():
            await _run(ws, run)
    finally:
        _authenticated(ws)


async def _run(ws: WebSocket, run: Any) -> None:
    try:
        await run()
    except Closing as e:
        if e.why is not None:
            metrics_of(ws.app).ws_closed(e.why)
        if e.code != NORMAL:
            with contextlib.suppress(Exception):
                await _send(ws, {"type": "error", "code": e.error, "message": e.reason})
        await _close(ws, e.code, e.reason)
    except ApiError as e:
        code = _CLOSE_FOR_STATUS.get(e.status, RETRY)
        with contextlib.suppress(Exception):
            await _send(ws, {"type": "error", "code": e.code, "message": e.message})
        await _close(ws, code, e.message)
    except WebSocketDisconnect:
        pass
    except StoreError as e:
        log.warning("signalling connection ended by the store: %s", e)
        await _close(ws, RETRY, "temporary server problem; reconnect")


async def _first_done(*coros: Any) -> None:
    """Run the coroutines until the first one ends; cancel the rest; re-raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in done:
        t.result()


# --- a call's two parties ------------------------------------------------------------------


@dataclass(slots=True)
class Party:
    ws: WebSocket
    ctx: Ctx
    token: SessionToken
    role: Role
    call: Call
    last: int = 0  # highest seq of the other party's messages delivered
    relay_only: bool = True  # pass relay candidates only (control/candidates.py)

    @property
    def other(self) -> Role:
        return Role.STAFF if self.role is Role.VISITOR else Role.VISITOR

    async def deliver(self) -> None:
        store = self.ctx.db()
        for seq, body in await store.read_signals(
            self.call.tenant_id, self.call.id, self.other, self.last
        ):
            message = json.loads(body)
            message["from"] = str(self.other)
            message["seq"] = seq
            await _send(self.ws, message)
            self.last = seq

    async def status(self) -> bool:
        """Send the call's state; True once it is over (the connection then ends)."""
        store = self.ctx.db()
        call = await store.get_call(self.call.tenant_id, self.call.id)
        if call is None:
            raise Closing(NOT_FOUND, "the call is gone", "not_found")
        self.call = call
        await _send(self.ws, _status_event(call, await _staff_name(self.ctx, call)))
        return call.status in FINAL_STATUSES

    async def pump(self, sub: Subscription) -> None:
        """Notifications in, messages and state changes out."""
        async for payload in sub:
            event = json.loads(payload)
            kind = event.get("k")
            if kind == "signal" and event.get("sender") == str(self.other):
                await self.deliver()
            elif kind == "status":
                if await self.status():
                    raise Closing(NORMAL, f"the call is {self.call.status}", "call_over")
            elif kind == "revoked" and event.get("token") == self.token.id:
                raise _revoked()
        raise Closing(RETRY, "notifications stopped; reconnect", "unavailable")

    async def listen(self) -> None:
        """Client messages in: checked, stored, announced."""
        bucket = Bucket(RATE, BURST)
        errors = 0
        store = self.ctx.db()
        while True:
            try:
                message = await _receive_json(self.ws)
                if message is None:
                    return
                kind = message.get("type")
                if kind == "ping":
                    await _send(self.ws, {"type": "pong"})
                    continue
                if kind not in SIGNAL_TYPES:
                    raise ValueError(f"type must be one of {', '.join(sorted(SIGNAL_TYPES))}")
                if not bucket.take():
                    raise Closing(POLICY, "too many messages", "rate_limited")
                message.pop("from", None)
                message.pop("seq", None)
                if self.relay_only:
                    screened, dropped = candidates.screen(message)
                    for kind in dropped:
                        metrics_of(self.ws.app).candidate_dropped(kind)
                    if screened is None:
                        continue
                    message = screened
                body = json.dumps(message, separators=(",", ":"))
                await store.add_signal(
                    self.call.tenant_id, self.call.id, self.role, body, now_of(self.ws)
                )
                await signal_posted(store, self.call, str(self.role))
            except (ValueError, Invalid) as e:  # Invalid: over the store's per-call limits
                errors += 1
                if errors > MAX_ERRORS:
                    raise Closing(BAD_REQUEST, "too many invalid messages", "invalid") from None
                await _send(self.ws, {"type": "error", "code": "invalid", "message": str(e)})

    async def ring_timer(self) -> None:
        """While the visitor waits, end the ringing at the link's deadline (missed)."""
        store = self.ctx.db()
        link = await store.get_link(self.call.tenant_id, self.call.link_id)
        timeout = link.ring_timeout if link is not None else self.ctx.settings.ring_timeout
        while True:
            # the loop's timers may fire a hair early against the wall clock: check, and
            # sleep again until the call has stopped ringing (the status event ends it)
            left = machine.deadline(self.call, timeout) - now_of(self.ws)
            await asyncio.sleep(max(0.01, left))
            call = await store.get_call(self.call.tenant_id, self.call.id)
            if call is None or call.status is not CallStatus.RINGING:
                break
            now = now_of(self.ws)
            settled = await settle(
                store, call, link, now, self.ctx.settings.ring_timeout, self.ctx.policy
            )
            if settled.status is not CallStatus.RINGING:
                break
        await asyncio.Event().wait()  # the connection goes on (the status event ends it)


async def _party(ws: WebSocket, call_id: str) -> None:
    ctx = ctx_of(ws)
    store = ctx.db()
    token, hello = await _authenticate(ws, ctx)
    if token.call_id != call_id or token.role is None:
        raise ApiError(404, "not_found", "no such call")  # a token for another call
    call = await store.get_call(token.tenant_id, call_id)
    if call is None:
        raise ApiError(404, "not_found", "no such call")
    if token.role is Role.STAFF:
        member = await acting_staff(ctx, token)
        if call.answered_by != member.id:
            raise ApiError(403, "forbidden", "only the staff member who answered may signal")
    after = hello.get("after", 0)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise Closing(BAD_REQUEST, '"after" must be a non-negative integer', "invalid")
    link = await store.get_link(call.tenant_id, call.link_id)
    relay_only = link is None or link.relay_only
    party = Party(ws, ctx, token, token.role, call, last=after, relay_only=relay_only)
    async with await store.listen(call_channel(call_id)) as sub:
        # state read after subscribing: nothing that happens from here on is missed
        party.call = await settle(
            store, call, link, now_of(ws), ctx.settings.ring_timeout, ctx.policy
        )
        if party.call.status in FINAL_STATUSES:
            raise ApiError(409, "call_over", f"the call is {party.call.status}")
        name = await _staff_name(ctx, party.call)
        ready = {**_status_event(party.call, name), "type": "ready", "role": str(party.role)}
        await _send(ws, {**ready, "relay_only": relay_only})
        await party.deliver()
        tasks = [party.listen(), party.pump(sub)]
        if party.role is Role.VISITOR and party.call.status is CallStatus.RINGING:
            tasks.append(party.ring_timer())
        await _first_done(*tasks)
    await _close(ws, NORMAL, "bye")


@router.websocket("/v1/calls/{call_id}/signal")
async def call_signal(ws: WebSocket, call_id: str) -> None:
    await _serve(ws, lambda: _party(ws, call_id))


# --- staff consoles ---------------------------------------------------------------------------


async def _ringing(ctx: Ctx, member: Staff, now: float) -> list[dict[str, Any]]:
    found = await ringing_for(ctx.db(), member, now, ctx.settings.ring_timeout, ctx.policy)
    where = ctx.settings.region_map.region_for
    return [RingingOut.of(c, k, where(c.visitor_prefix)).model_dump(mode="json") for c, k in found]


@dataclass(frozen=True, slots=True)
class Ring:
    """What each console needs of one new call: whom it rings, who declined it already, and
    what a console shows (None: it does not ring, or no longer)."""

    rung: frozenset[str]
    declined: frozenset[str]
    shown: dict[str, Any] | None


NO_RING: Final = Ring(frozenset(), frozenset(), None)
RING_MEMO: Final = 5.0  # seconds a process keeps one call's ring look-up for its consoles
RING_MEMO_ENTRIES: Final = 1024


class Rings:
    """The ringing fan-out's look-ups, one per new call per process: every console of the
    tenant hears a call ring on its channel, and they all share one read of the call, its
    link, the team and the declines, then decide in memory (before, each console re-read
    every call ringing in its tenant, so a click cost consoles x ringing calls reads)."""

    def __init__(self) -> None:
        self._found: OrderedDict[tuple[str, str], tuple[float, asyncio.Future[Ring]]] = (
            OrderedDict()
        )

    async def get(self, ctx: Ctx, tenant_id: str, call_id: str, now: float) -> Ring:
        key = (tenant_id, call_id)
        at = time.monotonic()
        hit = self._found.get(key)
        if hit is None or at - hit[0] > RING_MEMO:
            task = asyncio.ensure_future(_look_up(ctx, tenant_id, call_id, now))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            hit = self._found[key] = (at, task)
            self._found.move_to_end(key)
            while len(self._found) > RING_MEMO_ENTRIES:
                self._found.popitem(last=False)
        return await asyncio.shield(hit[1])


def rings_of(ws: WebSocket) -> Rings:
    rings = getattr(ws.app.state, "rings", None)
    if not isinstance(rings, Rings):
        rings = ws.app.state.rings = Rings()
    return rings


async def _look_up(ctx: Ctx, tenant_id: str, call_id: str, now: float) -> Ring:
    store = ctx.db()
    call = await store.get_call(tenant_id, call_id)
    if call is None or call.status is not CallStatus.RINGING:
        return NO_RING
    link = await store.get_link(tenant_id, call.link_id)
    if link is None or machine.deadline(call, link.ring_timeout) <= now:
        return NO_RING  # gone, or past its ring timeout (settled as missed when next read)
    rung = frozenset(s.id for s in machine.rung_staff(link, await store.list_staff(tenant_id)))
    if not rung:
        return NO_RING
    declined = frozenset(await store.list_declines(tenant_id, call_id))
    shown = RingingOut.of(call, link, ctx.settings.region_map.region_for(call.visitor_prefix))
    return Ring(rung, declined, shown.model_dump(mode="json"))


class Console:
    """One staff console socket: rings, presence, callbacks out; presence and ready in."""

    def __init__(self, ws: WebSocket, ctx: Ctx, token: SessionToken, member: Staff) -> None:
        self.ws, self.ctx, self.token, self.member = ws, ctx, token, member
        self.rung: set[str] = set()

    @property
    def store(self) -> Store:
        return self.ctx.db()

    def now(self) -> float:
        return now_of(self.ws)

    async def reload(self) -> None:
        """Re-read the member; closes the socket once they may no longer act."""
        member = await active_staff(self.store, self.member.tenant_id, self.member.id)
        if member is None:
            raise Closing(
                UNAUTHORIZED, "this staff member is no longer active", "unauthorized", "staff"
            )
        self.member = member

    def check_expiry(self) -> None:
        """Close the socket once its token has expired (the console mints a new one and
        reconnects, or renews the token on this socket before)."""
        if self.now() >= self.token.expires_at:
            raise Closing(UNAUTHORIZED, "the console token expired", "unauthorized", "expired")

    async def touch(self) -> None:
        """Mark the member seen and keep the web session the token was minted under alive;
        closes the socket once that session is over, its token expired or was revoked, or
        its member may no longer act (the periodic re-check, should a notification of
        these have been missed)."""
        now = self.now()
        self.check_expiry()
        stored = await self.store.get_token(self.token.id)
        if stored is None or stored.revoked_at is not None:
            raise _revoked()
        await self.reload()
        parent = self.token.parent
        if parent is not None:
            session = await self.store.get_web_session(parent)
            if session is None or session.revoked_at is not None or now >= session.expires_at:
                raise Closing(UNAUTHORIZED, "the console session ended", "unauthorized", "session")
            await self.store.touch_web_session(parent, now)
        await self.store.set_staff_fields(self.member.tenant_id, self.member.id, {"seen_at": now})

    async def send_ringing(self) -> None:
        calls = await _ringing(self.ctx, self.member, self.now())
        self.rung = {r["call"]["id"] for r in calls}
        await _send(self.ws, {"type": "ringing", "calls": calls})

    async def send_presence(self, reason: str | None) -> None:
        until = self.member.wrapup_until
        await _send(
            self.ws,
            {
                "type": "presence",
                "status": str(self.member.presence),
                "wrapup_until": until if until is not None and until > self.now() else None,
                "reason": reason,
            },
        )

    async def send_callbacks(self) -> None:
        count = len(await open_callbacks(self.store, self.member))
        await _send(self.ws, {"type": "callbacks", "count": count})

    async def pump(self, sub: Subscription) -> None:
        """The tenant's events in: rings start and stop, presence, revocations, callbacks."""
        me = self.member.id
        async for payload in sub:
            event = json.loads(payload)
            kind = event.get("k")
            if kind == "call" and isinstance(event.get("call"), str):
                await self.on_call(event["call"], event.get("status"))
            elif kind == "presence" and event.get("staff") == me:
                await self.reload()
                await self.send_presence(event.get("reason"))
                await self.send_ringing()
            elif kind == "staff" and event.get("staff") == me:
                await self.reload()
            elif kind == "revoked" and event.get("token") == self.token.id:
                raise _revoked()
            elif kind == "callbacks":
                await self.send_callbacks()
        raise Closing(RETRY, "notifications stopped; reconnect", "unavailable")

    async def on_call(self, call_id: str, status: Any) -> None:
        if status == str(CallStatus.RINGING):
            now = self.now()
            ring = await rings_of(self.ws).get(self.ctx, self.member.tenant_id, call_id, now)
            me = self.member.id
            if (
                ring.shown is not None
                and me in ring.rung
                and me not in ring.declined
                and call_id not in self.rung
                and machine.available(self.member, now)
            ):
                self.rung.add(call_id)
                await _send(self.ws, {"type": "ring", **ring.shown})
        elif call_id in self.rung:
            self.rung.discard(call_id)
            await _send(self.ws, {"type": "call", "call_id": call_id, "status": status})

    async def keepalive(self) -> None:
        """Touch every :data:`TOUCH_EVERY` seconds; when a wrap-up ends, say so and ring;
        when the token expires, close."""
        touched = self.now()
        while True:
            until = self.member.wrapup_until
            now = self.now()
            wake = min(touched + TOUCH_EVERY, self.token.expires_at)
            if until is not None and until > now:
                wake = min(wake, until)
            await asyncio.sleep(max(0.01, wake - now))
            self.check_expiry()
            now = self.now()
            if until is not None and now >= until > touched:
                await self.reload()
                if self.member.wrapup_until == until:
                    await self.send_presence(None)
                    await self.send_ringing()
            if now - touched >= TOUCH_EVERY:
                await self.touch()
                touched = now

    async def listen(self) -> None:
        """Client messages in: ping, presence (available / away), ready (ends wrap-up)."""
        errors = 0
        while True:
            try:
                message = await _receive_json(self.ws)
            except ValueError as e:
                message = {"type": f"invalid ({e})"}
            if message is None:
                return
            kind = message.get("type")
            if kind == "ping":
                await _send(self.ws, {"type": "pong"})
                continue
            if kind == "presence" and message.get("status") in tuple(Presence):
                await set_presence(self.store, self.member, Presence(message["status"]))
                continue
            if kind == "ready":
                await end_wrapup(self.store, self.member)
                continue
            if kind == "auth" and isinstance(message.get("token"), str):
                await self.renew(message["token"])
                continue
            errors += 1
            if errors > MAX_ERRORS:
                raise Closing(BAD_REQUEST, "too many invalid messages", "invalid")
            await _send(
                self.ws,
                {
                    "type": "error",
                    "code": "invalid",
                    "message": "a console sends ping, ready, auth (a fresh token), or presence"
                    ' with status "available" or "away"',
                },
            )

    async def renew(self, token: str) -> None:
        """A fresh token for the same member (the console mints one before the old expires):
        the socket goes on under it. A token that does not authenticate, or speaks for
        someone else, is refused with an error; the socket keeps the token it had."""
        try:
            record = await check_session(self.ctx, token, self.now())
        except ApiError as e:
            await _send(self.ws, {"type": "error", "code": e.code, "message": e.message})
            return
        if (record.tenant_id, record.staff_id) != (self.token.tenant_id, self.token.staff_id):
            message = "the new token must be the same staff member's"
            await _send(self.ws, {"type": "error", "code": "forbidden", "message": message})
            return
        self.token = record
        await _send(self.ws, {"type": "renewed", "expires_at": record.expires_at})


async def _console(ws: WebSocket) -> None:
    ctx = ctx_of(ws)
    store = ctx.db()
    token, _ = await _authenticate(ws, ctx)
    console = Console(ws, ctx, token, await acting_staff(ctx, token))
    async with await store.listen(tenant_channel(console.member.tenant_id)) as sub:
        await console.touch()
        await console.reload()
        await console.send_ringing()
        await console.send_presence(None)
        await console.send_callbacks()
        await _first_done(console.listen(), console.pump(sub), console.keepalive())
    await _close(ws, NORMAL, "bye")


@router.websocket("/v1/staff/events")
async def staff_events(ws: WebSocket) -> None:
    await _serve(ws, lambda: _console(ws))
