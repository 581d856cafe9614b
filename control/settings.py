"""What a control-plane process is configured with (flags and environment fill it in).

Secrets are kept only in the form the process needs: operator keys as (public id, SHA-256),
token signing keys and relay secrets as bytes. ``clock`` and ``rng`` are injected so tests can
drive time and selection deterministically.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
