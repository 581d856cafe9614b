"""The call lifecycle's I/O side: how a call changes state in the store and who hears of it.

:mod:`control.calls` decides (sans-I/O) what a call becomes; this module makes it so, the one
way every HTTP route and WebSocket does:

- :func:`transition`: a compare-and-set on the stored status (so across processes exactly one
  racing writer wins), with the token revocation of a final state in the same transaction,
  then notifications on the call's channel (its signalling connections,
  wherever they are) and the tenant's channel (staff consoles). A call reaching a final state
  also revokes every token issued for it (the relays tear down its allocations at their next
  heartbeat) and drops its signalling messages, which carry ICE candidates and so addresses.
- :func:`settle`: a ringing call past its ring timeout becomes missed, lazily, when read.
- :func:`ringing_for`: the calls ringing one staff member now.
- :func:`revoke_token`: one token revoked, and its live signalling connection told.
- :func:`active_staff`: the one answer to "may this staff member act".
- :func:`create_call`, :func:`request_callback`: a new call, a callback request.
- :func:`move_relay`: the call's relay node replaced (an ICE restart), its status kept.

Webhooks hear of every one of these changes (:mod:`control.webhooks`): the deliveries are
queued in the same transaction as the change itself, so no event is lost or invented by a
write failing half-way, and the delivery workers are woken after the commit.

Presence (the console's side of ringing) rides on the same path. A call rings only members
who are :func:`control.calls.available` (active, available, not in wrap-up). When a call
:func:`transition` ends answered, the member who took it gets a wrap-up; when it ends missed,
each console member it rang who neither answered nor declined counts a missed ring, and at
:attr:`Policy.away_after_rings` is set away. Both are console features: a member with no
console seen lately (:func:`control.calls.on_console`) is left alone. Whoever a change
concerns hears it on the tenant's channel (``presence``), as do consoles when callback
requests change (``callbacks``), when a token is revoked (``revoked``) and when a member is
deactivated or deleted (``staff``): their live sockets close at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from control import calls as machine
from control import webhooks
from control.ids import MAX_PAGE
from control.models import (
    FINAL_STATUSES,
    Call,
    Callback,
    CallStatus,
    Link,
    Presence,
    Role,
    SessionToken,
    Staff,
    WebSession,
)
from control.settings import DEFAULT_AWAY_AFTER, DEFAULT_HOOK_QUEUE, DEFAULT_WRAPUP
from control.store import Store

log = logging.getLogger("clickacall.control.calls")

CONSOLE = "*"  # the call id inside a staff console token (not scoped to one call)


@dataclass(frozen=True, slots=True)
class Policy:
    """The presence rules a process runs with (``--wrapup-seconds``, ``--away-after-rings``)
    and the webhook deliveries one tenant may have waiting (``--webhook-queue``)."""

    wrapup_seconds: float = DEFAULT_WRAPUP
    away_after_rings: int = DEFAULT_AWAY_AFTER
    hook_queue: int = DEFAULT_HOOK_QUEUE


DEFAULT_POLICY = Policy()


# --- channels and events -----------------------------------------------------------------------


def signal_path(call_id: str) -> str:
    """Where a call's two parties open their signalling WebSocket."""
    return f"/v1/calls/{call_id}/signal"


def call_channel(call_id: str) -> str:
    """A call's notification channel: its two parties' signalling connections listen on it."""
    return f"call_{call_id}"


def tenant_channel(tenant_id: str) -> str:
    """A tenant's notification channel: its staff consoles listen on it."""
    return f"tenant_{tenant_id}"


def _event(kind: str, **fields: object) -> str:
    return json.dumps({"k": kind, **fields}, separators=(",", ":"))


async def publish(store: Store, call: Call) -> None:
    """Tell the call's parties and the tenant's staff consoles that ``call`` changed."""
    await store.notify(call_channel(call.id), _event("status", status=str(call.status)))
    await store.notify(
        tenant_channel(call.tenant_id),
        _event("call", call=call.id, link=call.link_id, status=str(call.status)),
    )


async def signal_posted(store: Store, call: Call, sender: str) -> None:
    await store.notify(call_channel(call.id), _event("signal", sender=sender))


async def callbacks_changed(store: Store, call: Call) -> None:
    """Consoles recount the open callback requests (one was requested or marked done)."""
    await store.notify(tenant_channel(call.tenant_id), _event("callbacks", link=call.link_id))


async def presence_changed(
    store: Store, tenant_id: str, staff_id: str, reason: str | None = None
) -> None:
    """The member's consoles re-read their presence and wrap-up (``reason``: "manual",
    "missed" or None)."""
    await store.notify(tenant_channel(tenant_id), _event("presence", staff=staff_id, reason=reason))


# --- people and tokens ---------------------------------------------------------------------------


async def active_staff(store: Store, tenant_id: str, staff_id: str | None) -> Staff | None:
    """The staff member if they exist and are active; None if they may no longer act."""
    if not staff_id:
        return None
    member = await store.get_staff(tenant_id, staff_id)
    return member if member is not None and member.active else None


async def revoke_token(store: Store, record: SessionToken, now: float) -> float:
    """Revoke one session token (idempotent: the first revocation's time stays) and throw it out
    of its live connections (a call's signalling, a staff console). Returns when it was revoked."""
    if record.revoked_at is not None:
        return record.revoked_at
    await store.revoke_token(record.id, now)
    await _revoked(store, record)
    return now


async def _revoked(store: Store, record: SessionToken) -> None:
    if record.call_id is not None and record.call_id != CONSOLE:
        await store.notify(call_channel(record.call_id), _event("revoked", token=record.id))
    if record.role is Role.STAFF:
        await store.notify(tenant_channel(record.tenant_id), _event("revoked", token=record.id))


async def end_web_session(store: Store, session: WebSession, now: float) -> int:
    """Sign-out: the session and every console token minted under it are revoked, and their
    live sockets closed. Returns how many tokens went with it."""
    await store.revoke_web_sessions(
        session.tenant_id, session.staff_id, now, id_hash=session.id_hash
    )
    tokens = await store.revoke_tokens_of(session.tenant_id, now, parent=session.id_hash)
    for record in tokens:
        await _revoked(store, record)
    return len(tokens)


async def end_sessions_of(
    store: Store, member: Staff, now: float, *, keep: str | None = None
) -> int:
    """A member's password changed: every web session of theirs but ``keep`` (an id_hash)
    ends, with the console tokens minted under it. Returns how many sessions ended."""
    ended = 0
    for session in await store.list_web_sessions(member.tenant_id, member.id):
        if session.id_hash != keep:
            await end_web_session(store, session, now)
            ended += 1
    return ended


async def revoke_tokens_of_staff(store: Store, tenant_id: str, staff_id: str, now: float) -> int:
    """Every token of a member revoked and their live sockets (consoles, calls' signalling)
    closed, their web sessions left alone (a member who no longer answers calls but still
    runs the dashboard). Returns how many tokens went."""
    tokens = await store.revoke_tokens_of(tenant_id, now, staff_id=staff_id)
    for record in tokens:
        await _revoked(store, record)
    return len(tokens)


async def revoke_staff(store: Store, tenant_id: str, staff_id: str, now: float) -> int:
    """A member deactivated or deleted: their web sessions and every token of theirs are
    revoked, and their live sockets (consoles, calls' signalling) closed. Returns how many
    sessions ended."""
    sessions = await store.revoke_web_sessions(tenant_id, staff_id, now)
    await revoke_tokens_of_staff(store, tenant_id, staff_id, now)
    await store.notify(tenant_channel(tenant_id), _event("staff", staff=staff_id))
    if sessions:
        log.info("staff member %s: %d web session(s) ended", staff_id, sessions)
    return sessions


# --- presence --------------------------------------------------------------------------------


async def set_presence(store: Store, member: Staff, presence: Presence) -> None:
    """The member sets themselves available or away (which also clears missed rings)."""
    await store.set_staff_fields(
        member.tenant_id, member.id, {"presence": Presence(presence), "missed_rings": 0}
    )
    await presence_changed(store, member.tenant_id, member.id, "manual")


async def end_wrapup(store: Store, member: Staff) -> None:
    """The member is ready for calls again before their wrap-up ends."""
    await store.set_staff_fields(member.tenant_id, member.id, {"wrapup_until": None})
    await presence_changed(store, member.tenant_id, member.id, "manual")


async def _after_final(store: Store, call: Call, now: float, policy: Policy) -> None:
    """Wrap-up for the member who answered a call that ended; missed rings for the console
    members a missed call rang."""
    when = call.ended_at if call.ended_at is not None else now
    if call.status is CallStatus.ENDED and call.answered_by:
        member = await store.get_staff(call.tenant_id, call.answered_by)
        if member is not None and machine.on_console(member, now) and policy.wrapup_seconds > 0:
            until = when + policy.wrapup_seconds
            await store.set_staff_fields(call.tenant_id, member.id, {"wrapup_until": until})
            await presence_changed(store, call.tenant_id, member.id)
    elif call.status is CallStatus.MISSED:
        link = await store.get_link(call.tenant_id, call.link_id)
        if link is None:
            return
        declined = set(await store.list_declines(call.tenant_id, call.id))
        rang = [
            m.id
            for m in machine.ringable(link, await store.list_staff(call.tenant_id), when)
            if machine.on_console(m, now) and m.id not in declined
        ]
        for staff_id in await store.miss_rings(call.tenant_id, rang, policy.away_after_rings):
            log.info(
                "staff member %s set away after %d missed ring(s)",
                staff_id,
                policy.away_after_rings,
            )
            await presence_changed(store, call.tenant_id, staff_id, "missed")


# --- state changes -------------------------------------------------------------------------------


async def transition(
    store: Store, before: Call, after: Call, now: float, policy: Policy = DEFAULT_POLICY
) -> bool:
    """Store ``after`` if the call is still in ``before``'s status; False if it changed meanwhile.

    The new status, and for a final one the revocation of the call's tokens and the deletion of
    its signalling messages, are one transaction: a call never ends with live tokens (or
    keeps its state with its tokens revoked) because a write failed half-way."""
    if after is before:
        return True
    revoked = 0
    async with store.transaction():
        if not await store.update_call(after, before.status):
            return False
        if after.status is CallStatus.ANSWERED and after.answered_by:
            await store.set_staff_fields(after.tenant_id, after.answered_by, {"missed_rings": 0})
        if after.status in FINAL_STATUSES:
            revoked = await store.revoke_call_tokens(after.tenant_id, after.id, now)
            await store.delete_signals(after.tenant_id, after.id)
        hooked = await webhooks.enqueue(
            store, after, webhooks.events_of(before, after), now, policy.hook_queue
        )
    await webhooks.queued(store, hooked)
    if after.status in FINAL_STATUSES:
        log.info(
            "call %s %s (%s); %d token(s) revoked",
            after.id,
            after.status,
            after.end_reason or "-",
            revoked,
        )
    await publish(store, after)
    if after.status in FINAL_STATUSES:
        await _after_final(store, after, now, policy)
    return True


async def create_call(
    store: Store,
    call: Call,
    now: float,
    policy: Policy = DEFAULT_POLICY,
    admit: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Store a new call (a click: ringing; a callback request with no call possible: missed
    with the request) and queue its webhook events in the same transaction; ``admit()``, run
    first in it, may refuse the call by raising (the click's ringing caps)."""
    events = webhooks.events_of(None, call)
    if call.status is CallStatus.MISSED:
        events = ["missed"]
    if call.callback_state is not None:
        events.append("callback_requested")
    async with store.transaction():
        if admit is not None:
            await admit()
        await store.create_call(call)
        hooked = await webhooks.enqueue(store, call, events, now, policy.hook_queue)
    await webhooks.queued(store, hooked)


async def move_relay(store: Store, call: Call, node_id: str, region: str) -> bool:
    """Point ``call`` at another relay node (its own is gone; the parties restart ICE), status
    unchanged: a compare-and-set like :func:`transition`'s, so it fails (False) if the call
    changed meanwhile. Nobody is notified: each party learns the node from its fresh ICE."""
    moved = dataclasses.replace(call, relay_node=node_id, relay_region=region)
    return await store.update_call(moved, call.status)


async def request_callback(
    store: Store,
    call: Call,
    ref: str,
    now: float,
    statuses: list[CallStatus],
    policy: Policy = DEFAULT_POLICY,
) -> bool:
    """A visitor's callback request on ``call`` (see :meth:`Store.request_callback`), with its
    webhook event in the same transaction; whether it was stored."""
    async with store.transaction():
        if not await store.request_callback(call.tenant_id, call.id, ref, now, statuses):
            return False
        asked = dataclasses.replace(
            call, visitor_ref=ref, callback_state=Callback.OPEN, callback_at=now
        )
        hooked = await webhooks.enqueue(
            store, asked, ["callback_requested"], now, policy.hook_queue
        )
    await webhooks.queued(store, hooked)
    return True


async def settle(
    store: Store,
    call: Call,
    link: Link | None,
    now: float,
    default_timeout: float,
    policy: Policy = DEFAULT_POLICY,
) -> Call:
    """The call as it stands at ``now``: a ringing call past its ring timeout becomes missed."""
    if call.status is not CallStatus.RINGING:
        return call
    timeout = link.ring_timeout if link is not None else default_timeout
    missed = machine.expire(call, now, timeout)
    if missed is call or await transition(store, call, missed, now, policy):
        return missed
    return await store.get_call(call.tenant_id, call.id) or missed


async def ringing_for(
    store: Store,
    member: Staff,
    now: float,
    default_timeout: float,
    policy: Policy = DEFAULT_POLICY,
) -> list[tuple[Call, Link]]:
    """(call, link) for each call ringing ``member`` at ``now`` that they have not declined;
    none while they are away or in wrap-up."""
    if not machine.available(member, now):
        return []
    page = await store.list_calls(member.tenant_id, CallStatus.RINGING, limit=MAX_PAGE)
    if not page.calls:
        return []
    links = {k.id: k for k in await store.list_links(member.tenant_id)}
    team = await store.list_staff(member.tenant_id)
    out: list[tuple[Call, Link]] = []
    for call in reversed(page.calls):
        link = links.get(call.link_id)
        if link is None or member.id not in {s.id for s in machine.rung_staff(link, team)}:
            continue
        if member.id in await store.list_declines(call.tenant_id, call.id):
            continue
        call = await settle(store, call, link, now, default_timeout, policy)
        if call.status is CallStatus.RINGING:
            out.append((call, link))
    return out
