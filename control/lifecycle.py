"""The call lifecycle's I/O side: how a call changes state in the store and who hears of it.

:mod:`control.calls` decides (sans-I/O) what a call becomes; this module makes it so, the one
way every HTTP route and WebSocket does:

- :func:`transition`: a compare-and-set on the stored status (so across processes exactly one
  racing writer wins), then notifications on the call's channel (its signalling connections,
  wherever they are) and the tenant's channel (staff consoles). A call reaching a final state
  also revokes every token issued for it (the relays tear down its allocations at their next
  heartbeat) and drops its signalling messages, which carry ICE candidates and so addresses.
- :func:`settle`: a ringing call past its ring timeout becomes missed, lazily, when read.
- :func:`ringing_for`: the calls ringing one staff member now.
- :func:`revoke_token`: one token revoked, and its live signalling connection told.
- :func:`active_staff`: the one answer to "may this staff member act".
"""

from __future__ import annotations

import json
import logging

from control import calls as machine
from control.ids import MAX_PAGE
from control.models import FINAL_STATUSES, Call, CallStatus, Link, SessionToken, Staff
from control.store import Store

log = logging.getLogger("clickacall.control.calls")


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


# --- people and tokens ---------------------------------------------------------------------------


async def active_staff(store: Store, tenant_id: str, staff_id: str | None) -> Staff | None:
    """The staff member if they exist and are active; None if they may no longer act."""
    if not staff_id:
        return None
    member = await store.get_staff(tenant_id, staff_id)
    return member if member is not None and member.active else None


async def revoke_token(store: Store, record: SessionToken, now: float) -> float:
    """Revoke one session token (idempotent: the first revocation's time stays) and throw it out
    of its call's live signalling connection. Returns when it was revoked."""
    if record.revoked_at is not None:
        return record.revoked_at
    await store.revoke_token(record.id, now)
    if record.call_id is not None:
        await store.notify(call_channel(record.call_id), _event("revoked", token=record.id))
    return now


# --- state changes -------------------------------------------------------------------------------


async def transition(store: Store, before: Call, after: Call, now: float) -> bool:
    """Store ``after`` if the call is still in ``before``'s status; False if it changed meanwhile."""
    if after is before:
        return True
    if not await store.update_call(after, before.status):
        return False
    if after.status in FINAL_STATUSES:
        revoked = await store.revoke_call_tokens(after.tenant_id, after.id, now)
        await store.delete_signals(after.tenant_id, after.id)
        log.info(
            "call %s %s (%s); %d token(s) revoked",
            after.id,
            after.status,
            after.end_reason or "-",
            revoked,
        )
    await publish(store, after)
    return True


async def settle(
    store: Store, call: Call, link: Link | None, now: float, default_timeout: float
) -> Call:
    """The call as it stands at ``now``: a ringing call past its ring timeout becomes missed."""
    if call.status is not CallStatus.RINGING:
        return call
    timeout = link.ring_timeout if link is not None else default_timeout
    missed = machine.expire(call, now, timeout)
    if missed is call or await transition(store, call, missed, now):
        return missed
    return await store.get_call(call.tenant_id, call.id) or missed


async def ringing_for(
    store: Store, member: Staff, now: float, default_timeout: float
) -> list[tuple[Call, Link]]:
    """(call, link) for each call ringing ``member`` at ``now`` that they have not declined."""
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
        call = await settle(store, call, link, now, default_timeout)
        if call.status is CallStatus.RINGING:
            out.append((call, link))
    return out
