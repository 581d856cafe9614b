"""Webhooks: what a tenant's endpoints hear of its calls, and the rules deliveries follow.

This module is the sans-I/O part plus the one store write the call lifecycle makes
(:func:`enqueue`); :mod:`control.hookworker` sends what is queued.

- Events (:data:`~control.models.HOOK_EVENTS`): ``ringing`` (a call was placed), ``answered``,
  ``missed`` (nobody answered in time), ``ended`` (every other end: hung up after an answer,
  declined, abandoned by the visitor, failed; ``call.outcome`` says which) and
  ``callback_requested``. :func:`events_of` maps a call's change to them.
- Payloads (:func:`payload`): the call's id, reference, times, outcome and media, its link and
  the staff member who answered; visitor data (the reference or callback contact the visitor
  left) only for an endpoint whose tenant switched ``include_visitor`` on.
- Signatures (:func:`signature_header`): ``v1=`` + hex HMAC-SHA256 of ``f"{timestamp}.{body}"``
  under the endpoint's secret, and a second ``v1=`` under the previous secret while a rotation's
  grace period runs (docs/webhooks.md tells receivers how to check them).
- Addresses (:class:`HookPolicy`): ``https://`` only (``http://`` when the operator allows it),
  and no host in the special-purpose ranges the relay denies (loopback, private, link-local
  and cloud metadata, CGNAT, ...: :data:`relay.policy.DEFAULT_DENY_V4` / ``_V6``) unless the
  operator allows a network; checked when an endpoint is registered and at every delivery on
  the addresses the name resolves to then.
- Retries (:func:`next_attempt`): exponential backoff with jitter, until the retry window
  (24 hours by default) from when the delivery was queued has passed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import random
import secrets
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from control.models import (
    FINAL_STATUSES,
    HOOK_EVENTS,
    Call,
    CallStatus,
    Delivery,
    DeliveryState,
    Hook,
)
from control.store import Store
from relay.policy import DEFAULT_DENY_V4, DEFAULT_DENY_V6

HOOK_CHANNEL = "webhooks"  # the worker wakes when something is queued
SECRET_PREFIX = "whsec_"
MAX_URL = 2000
BACKOFF_FIRST = 10.0  # seconds before the first retry ...
BACKOFF_MAX = 3600.0  # ... doubling up to this
QUEUE_FULL = "queue full: this business has too many deliveries waiting"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

_DENY = [ipaddress.ip_network(c) for c in (*DEFAULT_DENY_V4, *DEFAULT_DENY_V6)]


class Refused(ValueError):
    """An endpoint URL we will not call; the message names the field (``url: ...``), ``reason``
    is a stable key for the dashboard's catalogue and ``params`` what its text needs."""

    def __init__(self, message: str, reason: str, **params: str | int) -> None:
        super().__init__(message)
        self.reason = reason
        self.params = params


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a delivery attempt failed: a code of :data:`~control.models.HOOK_ERRORS` with its
    params (for programs and the dashboard's catalogue) and the same in English (the log, the
    API's ``last_error``)."""

    code: str
    text: str
    params: dict[str, str | int | float] = field(default_factory=dict)

    def record(self, d: Delivery) -> None:
        d.last_error, d.last_error_code, d.last_error_params = self.text, self.code, self.params


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_delivery_id() -> str:
    return "wh_" + uuid.uuid4().hex


# --- addresses ---------------------------------------------------------------------------------


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to now (the system's resolver)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class HookPolicy:
    """Where endpoints may be: the operator's ``--webhook-allow`` networks open a part of the
    deny list, ``--webhook-allow-http`` lets plain ``http://`` through (tests, labs)."""

    allow: tuple[Network, ...] = ()
    allow_http: bool = False
    resolve: Resolver = field(default=system_resolve)

    @classmethod
    def of(cls, allow: Iterable[str], allow_http: bool = False) -> HookPolicy:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in allow), allow_http)

    def denied(self, address: str) -> bool:
        """Whether deliveries to ``address`` are refused."""
        try:
            addr: Address = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return True
        # IPv6 forms carrying an IPv4 address (mapped, NAT64, 6to4, ...) are on the deny list
        # themselves, so an allowed IPv4 network does not open them
        if any(addr.version == n.version and addr in n for n in self.allow):
            return False
        return any(addr.version == n.version and addr in n for n in _DENY)

    def split(self, url: str) -> tuple[str, str, int]:
        """(scheme, host, port) of an acceptable URL; :class:`Refused` otherwise (no look-up)."""
        if len(url) > MAX_URL:
            raise Refused(f"url: at most {MAX_URL} characters", "url_too_long", max=MAX_URL)
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise Refused("url: not a valid URL", "url_invalid") from None
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes:
            raise Refused("url: must start with https://", "url_scheme")
        if parts.username is not None or parts.password is not None:
            raise Refused("url: must not carry a user name or password", "url_credentials")
        host = parts.hostname or ""
        if not host or any(c.isspace() for c in url):
            raise Refused("url: must name a host", "url_no_host")
        return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses to connect to: the literal, or what the name resolves to now;
        :class:`Refused` if any is denied or there is none."""
        try:
            ipaddress.ip_address(host)
            found = [host]
        except ValueError:
            try:
                found = await asyncio.wait_for(self.resolve(host, port), 10.0)
            except (OSError, TimeoutError, UnicodeError):
                raise Refused(
                    f"url: the host {host} cannot be resolved", "url_unresolved", host=host
                ) from None
        if not found:
            raise Refused(f"url: the host {host} cannot be resolved", "url_unresolved", host=host)
        bad = [a for a in found if self.denied(a)]
        if bad:
            raise Refused(
                f"url: {host} is (or resolves to) {bad[0]}, a private, loopback, link-local or"
                " other special-purpose address; webhooks go to public addresses only",
                "url_private",
                host=host,
                address=bad[0],
            )
        return found

    async def check(self, url: str) -> str:
        """The URL if an endpoint may be registered there (see :meth:`split`, :meth:`addresses`)."""
        _, host, port = self.split(url)
        await self.addresses(host, port)
        return url


# --- signatures ----------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signing_secrets(hook: Hook, now: float) -> list[str]:
    """The secrets a delivery at ``now`` is signed with: the current one, and the previous one
    while its grace period after a rotation runs."""
    out = [hook.secret]
    if hook.prev_secret and hook.prev_until is not None and now < hook.prev_until:
        out.append(hook.prev_secret)
    return out


def signature_header(hook: Hook, timestamp: int, body: bytes, now: float) -> str:
    return ",".join(f"v1={sign(s, timestamp, body)}" for s in signing_secrets(hook, now))


def verify(header: str, secret: str, timestamp: int, body: bytes) -> bool:
    """What a receiver does: one of the header's ``v1=`` signatures is ours."""
    want = sign(secret, timestamp, body)
    return any(
        part.startswith("v1=") and hmac.compare_digest(part[3:], want) for part in header.split(",")
    )


# --- retries ---------------------------------------------------------------------------------


def next_attempt(d: Delivery, now: float, window: float, rng: random.Random) -> float | None:
    """When to try again after ``d.attempts`` failed attempts: exponential backoff with jitter
    (half to the whole of ``BACKOFF_FIRST * 2**(attempts-1)``, capped); None once that is past
    the retry window from ``d.queued_at``."""
    delay = min(BACKOFF_FIRST * 2.0 ** max(d.attempts - 1, 0), BACKOFF_MAX)
    at = now + delay * (0.5 + 0.5 * rng.random())
    return None if at > d.queued_at + window else at


# --- events and payloads ---------------------------------------------------------------------------


def events_of(before: Call | None, after: Call) -> list[str]:
    """The events a call's change fires: a new call rings; an answer; a final state."""
    if before is not None and before.status is after.status:
        return []
    out: list[str] = []
    if after.status is CallStatus.RINGING and before is None:
        out.append("ringing")
    elif after.status is CallStatus.ANSWERED:
        out.append("answered")
    elif after.status is CallStatus.MISSED:
        out.append("missed")
    elif after.status in FINAL_STATUSES:
        out.append("ended")
    return out


def payload(
    delivery_id: str,
    event: str,
    call: Call,
    link: tuple[str, str, str] | None,
    staff: tuple[str, str] | None,
    now: float,
    include_visitor: bool,
) -> str:
    """The JSON body of one delivery (``link``: id, public id, name; ``staff``: id, name of the
    member who answered)."""
    body: dict[str, object] = {
        "id": delivery_id,
        "event": event,
        "created_at": now,
        "call": {
            "id": call.id,
            "call_ref": call.call_ref,
            "status": str(call.status),
            "outcome": str(call.status) if call.status in FINAL_STATUSES else None,
            "end_reason": call.end_reason,
            "media": None if call.media is None else str(call.media),
            "created_at": call.created_at,
            "answered_at": call.answered_at,
            "ended_at": call.ended_at,
            "duration": (
                round(call.ended_at - call.answered_at, 3)
                if call.ended_at is not None and call.answered_at is not None
                else None
            ),
            "relay_region": call.relay_region,
        },
        "link": None if link is None else {"id": link[0], "public_id": link[1], "name": link[2]},
        "staff": None if staff is None else {"id": staff[0], "name": staff[1]},
    }
    if event == "callback_requested":
        body["callback"] = {"requested_at": call.callback_at}
    if include_visitor:
        body["visitor"] = {"ref": call.visitor_ref}
    return json.dumps(body, separators=(",", ":"))


async def enqueue(store: Store, call: Call, events: list[str], now: float, queue_max: int) -> int:
    """Queue ``events`` of ``call`` for each active endpoint of its tenant that chose them, in
    the caller's transaction when it is in one. A tenant with ``queue_max`` deliveries pending
    gets the new ones recorded as failed (queue full), so the log shows them and "send again"
    can still send them. Returns how many were queued pending."""
    if not events:
        return 0
    hooks = [h for h in await store.list_hooks(call.tenant_id) if h.active]
    wanted = [(h, e) for e in events for h in hooks if e in h.events and e in HOOK_EVENTS]
    if not wanted:
        return 0
    link = await store.get_link(call.tenant_id, call.link_id)
    member = await store.get_staff(call.tenant_id, call.answered_by) if call.answered_by else None
    room = max(queue_max - await store.count_pending(call.tenant_id), 0)
    out: list[Delivery] = []
    for hook, event in wanted:
        did = new_delivery_id()
        full = len(out) >= room
        out.append(
            Delivery(
                id=did,
                tenant_id=call.tenant_id,
                endpoint_id=hook.id,
                event=event,
                payload=payload(
                    did,
                    event,
                    call,
                    None if link is None else (link.id, link.public_id, link.name),
                    None if member is None else (member.id, member.name),
                    now,
                    hook.include_visitor,
                ),
                call_id=call.id,
                personal=hook.include_visitor,
                state=DeliveryState.FAILED if full else DeliveryState.PENDING,
                next_attempt_at=now,
                last_error=QUEUE_FULL if full else None,
                last_error_code="queue_full" if full else None,
                created_at=now,
                queued_at=now,
                done_at=now if full else None,
            )
        )
    await store.add_deliveries(out)
    return sum(d.state is DeliveryState.PENDING for d in out)


async def queued(store: Store, n: int) -> None:
    """Wake the delivery workers (of every process) after a commit that queued ``n``."""
    if n:
        await store.notify(HOOK_CHANNEL, "")
