"""What a control-plane process is configured with (flags and environment fill it in).

Secrets are kept only in the form the process needs: operator keys as (public id, SHA-256),
token signing keys and relay secrets as bytes. ``clock`` and ``rng`` are injected so tests can
drive time and selection deterministically.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from control.keys import OperatorKey
from control.selection import HEARTBEAT_TIMEOUT, NO_REGIONS, RegionMap

DEFAULT_RING_TIMEOUT = 45.0
DEFAULT_SESSION_IDLE = 3600.0  # a console session unused this long is over
DEFAULT_SESSION_MAX = 12 * 3600.0  # and any session this long after sign-in
DEFAULT_WRAPUP = 30.0  # after an answered call, no new ring for this long
DEFAULT_AWAY_AFTER = 3  # unanswered rings in a row that set a console member away
DEFAULT_SIGNIN_CODE_WINDOW = 300.0  # after the password, this long to type the 2FA code
DEFAULT_THROTTLE_BURST = 5  # sign-in tries (per email, per client prefix) at once ...
DEFAULT_THROTTLE_INTERVAL = 20.0  # ... then one per this many seconds
DEFAULT_THROTTLE_ENTRIES = 10_000  # keys the throttle remembers
# A relay node's revocation cursor older than this (away longer) is not honoured: it gets what
# could still be valid instead (revocations newer than the longest relay credential's life).
DEFAULT_REVOCATION_WINDOW = 7 * 24 * 3600.0
DEFAULT_SUMMARY_SEQ_JUMP = 1_000_000  # a node's summary seq may run this far past its highest
DEFAULT_CLICK_ENTRIES = 100_000  # visitor keys and links the click throttle remembers
# bounds before authentication (control/bounds.py)
DEFAULT_MAX_BODY = 1 << 20  # bytes of one request body
DEFAULT_WS_MAX_SIZE = 1 << 16  # bytes of one WebSocket message, at the protocol level
DEFAULT_WS_AUTH_TIMEOUT = 10.0  # seconds a WebSocket has to authenticate
DEFAULT_WS_UNAUTH = 256  # WebSockets not yet authenticated, in total ...
DEFAULT_WS_UNAUTH_PER_PREFIX = 16  # ... and per client /24 or /48
DEFAULT_MAX_CONNECTIONS = 1000  # HTTP requests in progress plus open WebSockets ...
# webhooks (control/webhooks.py, control/hookworker.py)
DEFAULT_HOOK_CONCURRENCY = 8  # deliveries in flight at once, per process
DEFAULT_HOOK_TIMEOUT = 10.0  # seconds one delivery attempt may take, all told
DEFAULT_HOOK_WINDOW = 24 * 3600.0  # retries stop this long after a delivery was queued
DEFAULT_HOOK_QUEUE = 10_000  # deliveries one tenant may have waiting (more: failed, queue full)
DEFAULT_HOOK_ENDPOINTS = 20  # endpoints one tenant may register
DEFAULT_HEAD_TIMEOUT = 10.0  # seconds to send a request's head (headers), slow-loris
DEFAULT_MAX_PER_PREFIX = 200  # ... and of them from one client /24 or /48 (an office's NAT)


@dataclass(frozen=True, slots=True)
class ClickLimits:
    """Limits on the public click (``POST /v1/links/{public_id}/calls``): token buckets per
    visitor key and per link (``*_burst`` clicks at once, then one per ``*_interval``
    seconds) and caps on calls ringing at once per link and per tenant (0: no cap). The
    operator's flags set the defaults; a tenant's ``click_limits`` override them field by
    field."""

    visitor_burst: int = 5
    visitor_interval: float = 12.0  # 5 a minute, sustained
    link_burst: int = 60
    link_interval: float = 1.0  # 60 a minute, sustained
    ringing_per_link: int = 20
    ringing_per_tenant: int = 100

    def apply(self, overrides: Mapping[str, float]) -> ClickLimits:
        """These limits with a tenant's overrides (unknown names are ignored)."""
        changes: dict[str, Any] = {
            k: type(getattr(self, k))(v) for k, v in overrides.items() if k in CLICK_LIMIT_NAMES
        }
        return dataclasses.replace(self, **changes) if changes else self


CLICK_LIMIT_NAMES = tuple(f.name for f in dataclasses.fields(ClickLimits))


@dataclass(slots=True)
class ControlSettings:
    db_url: str
    token_keys: list[bytes]  # the first signs session tokens, every one verifies
    operator_keys: list[OperatorKey] = field(default_factory=list)
    relay_secrets: list[bytes] = field(default_factory=list)  # TURN REST; the first signs
    # a region's own TURN REST secrets (first signs), for its nodes instead of relay_secrets
    region_secrets: dict[str, list[bytes]] = field(default_factory=dict)
    node_secrets: list[str] = field(default_factory=list)  # relay heartbeats authenticate with one
    region_map: RegionMap = NO_REGIONS
    ring_timeout: float = DEFAULT_RING_TIMEOUT  # default for new links
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT
    session_idle: float = DEFAULT_SESSION_IDLE
    session_max: float = DEFAULT_SESSION_MAX
    signin_code_window: float = DEFAULT_SIGNIN_CODE_WINDOW
    wrapup_seconds: float = DEFAULT_WRAPUP
    away_after_rings: int = DEFAULT_AWAY_AFTER
    public_url: str | None = None  # base of invitation links; None: the request's base URL
    throttle_burst: int = DEFAULT_THROTTLE_BURST
    throttle_interval: float = DEFAULT_THROTTLE_INTERVAL
    throttle_entries: int = DEFAULT_THROTTLE_ENTRIES
    revocation_window: float = DEFAULT_REVOCATION_WINDOW
    # audit subjects' HMAC keys (first writes, all match); none: derived from token_keys
    audit_keys: list[bytes] = field(default_factory=list)
    summary_seq_jump: int = DEFAULT_SUMMARY_SEQ_JUMP
    metrics_listen: tuple[str, int] | None = None  # --metrics: the separate listener
    click_limits: ClickLimits = field(default_factory=ClickLimits)
    click_entries: int = DEFAULT_CLICK_ENTRIES
    max_body: int = DEFAULT_MAX_BODY
    ws_max_size: int = DEFAULT_WS_MAX_SIZE
    ws_auth_timeout: float = DEFAULT_WS_AUTH_TIMEOUT
    ws_unauth: int = DEFAULT_WS_UNAUTH
    ws_unauth_per_prefix: int = DEFAULT_WS_UNAUTH_PER_PREFIX
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_prefix: int = DEFAULT_MAX_PER_PREFIX
    head_timeout: float = DEFAULT_HEAD_TIMEOUT
    hook_concurrency: int = DEFAULT_HOOK_CONCURRENCY
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT
    hook_window: float = DEFAULT_HOOK_WINDOW
    hook_queue: int = DEFAULT_HOOK_QUEUE
    hook_endpoints: int = DEFAULT_HOOK_ENDPOINTS
    hook_allow: list[str] = field(default_factory=list)  # CIDRs opened in the deny list
    hook_allow_http: bool = False  # plain http:// endpoints (tests, labs)
    hook_ca: str | None = None  # a PEM file of CAs trusted besides the system's
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
