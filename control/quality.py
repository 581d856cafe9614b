"""Call quality: the relays' per-allocation records, folded into per-call figures (sans-I/O).

A relay node reports each TURN allocation's cumulative counters (docs/relay-summaries.md); the
control plane keeps the newest report of each allocation as an :class:`AllocationQuality` and
folds a call's allocations into one :class:`CallStats`, which the call log lists and filters on.

Directions. A relay counts ``to_peer`` (what its client sent) and ``to_client`` (what came
back). Which party the client is comes from the session token the allocation was made with,
so a call's figures are per *call* direction:

- ``from_visitor``: the visitor's ``to_peer``, the staff member's ``to_client``;
- ``to_visitor``: the visitor's ``to_client``, the staff member's ``to_peer``.

When both parties relay, each direction is measured twice; the call shows the worst of the
measurements (highest loss and jitter, lowest MOS), which is what the people on the call heard.

Usage analytics group calls by UTC day in the database and roll the days up here into ISO
weeks (Monday first) or calendar months, so SQL stays portable and cheap.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from control.models import Role

KINDS = ("audio", "video", "screen")  # media kinds a call log shows, in this order
DAY = 86400
K_ANONYMITY = 5  # the operator never sees a group of fewer calls than this


@dataclass(slots=True)
class Flow:
    """One direction of one allocation, cumulative since it started."""

    packets: int = 0
    bytes: int = 0
    lost: int = 0  # sequence gaps present when packets reached the relay
    jitter_ms: float = 0.0
    mos: float | None = None


@dataclass(slots=True)
class AllocationQuality:
    """The newest summary of one allocation, tied to its call through the session token."""

    tenant_id: str
    call_id: str
    node_id: str
    allocation: str
    token_id: str
    role: Role
    seq: int
    started_at: float
    at: float
    final: bool
    to_peer: Flow | None
    to_client: Flow | None
    streams: list[dict[str, Any]] = field(default_factory=list)
    relay_dropped: int = 0
    relay_rxq_overflow: int = 0
    relay_delay_us_p99: int = 0


@dataclass(slots=True)
class Leg:
    """One call direction, the worst measurement over the call's allocations."""

    loss_pct: float | None = None
    jitter_ms: float | None = None
    mos: float | None = None


@dataclass(slots=True)
class CallStats:
    tenant_id: str
    call_id: str
    media: list[str]  # kinds seen by a relay, in KINDS order
    allocations: int
    final: bool  # every allocation sent its final summary
    bytes: int  # relayed, both directions, every allocation
    from_visitor: Leg
    to_visitor: Leg
    mos: float | None  # the worst of both directions ("quality below" filters on it)
    relay_dropped: int  # packets the relays themselves dropped or lost to queue overflow
    updated_at: float


def loss_pct(flow: Flow) -> float | None:
    """Lost packets as a percentage of those expected (received + lost); None without any."""
    expected = flow.packets + flow.lost
    return None if expected <= 0 else round(100.0 * flow.lost / expected, 3)


def _worst(leg: Leg, flow: Flow | None) -> None:
    if flow is None:
        return
    loss = loss_pct(flow)
    if loss is not None:
        leg.loss_pct = loss if leg.loss_pct is None else max(leg.loss_pct, loss)
    if flow.packets:
        leg.jitter_ms = (
            flow.jitter_ms if leg.jitter_ms is None else max(leg.jitter_ms, flow.jitter_ms)
        )
    if flow.mos is not None:
        leg.mos = flow.mos if leg.mos is None else min(leg.mos, flow.mos)


def media_of(streams: Iterable[dict[str, Any]]) -> set[str]:
    return {str(s.get("kind")) for s in streams if s.get("kind") in KINDS and s.get("packets")}


def call_stats(records: list[AllocationQuality], now: float) -> CallStats | None:
    """The call-level figures of one call's allocation records (None without any)."""
    if not records:
        return None
    first = records[0]
    up, down = Leg(), Leg()
    kinds: set[str] = set()
    total = dropped = 0
    for r in records:
        sent, received = (up, down) if r.role is Role.VISITOR else (down, up)
        _worst(sent, r.to_peer)
        _worst(received, r.to_client)
        kinds |= media_of(r.streams)
        total += sum(f.bytes for f in (r.to_peer, r.to_client) if f is not None)
        dropped += r.relay_dropped + r.relay_rxq_overflow
    scores = [m for m in (up.mos, down.mos) if m is not None]
    return CallStats(
        tenant_id=first.tenant_id,
        call_id=first.call_id,
        media=[k for k in KINDS if k in kinds],
        allocations=len(records),
        final=all(r.final for r in records),
        bytes=total,
        from_visitor=up,
        to_visitor=down,
        mos=min(scores) if scores else None,
        relay_dropped=dropped,
        updated_at=now,
    )


# --- usage analytics ---------------------------------------------------------------------------


class Period(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


# the longest range one analytics request may cover, per period
MAX_SPAN = {Period.DAY: 400 * DAY, Period.WEEK: 160 * 7 * DAY, Period.MONTH: 61 * 31 * DAY}
DEFAULT_SPAN = {Period.DAY: 30 * DAY, Period.WEEK: 12 * 7 * DAY, Period.MONTH: 365 * DAY}


@dataclass(slots=True)
class Usage:
    """Calls created in one UTC day (``day``: days since 1970-01-01), for one group key."""

    day: int
    key: str | None  # link id, staff id, relay region, or None when not grouped
    calls: int = 0
    answered: int = 0
    seconds: float = 0.0  # answered duration of calls that ended
    bytes: int = 0
    mos_sum: float = 0.0  # per-call worst MOS, over calls with a relay summary
    mos_calls: int = 0

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.answered += other.answered
        self.seconds += other.seconds
        self.bytes += other.bytes
        self.mos_sum += other.mos_sum
        self.mos_calls += other.mos_calls


def bucket_start(day: int, period: Period) -> int:
    """The Unix time at which the period holding UTC day ``day`` starts."""
    if period is Period.DAY:
        return day * DAY
    if period is Period.WEEK:
        return (day - (day + 3) % 7) * DAY  # 1970-01-01 was a Thursday; weeks start on Monday
    date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return (date.replace(day=1) - dt.date(1970, 1, 1)).days * DAY


def day_of(ts: float) -> int:
    return int(ts // DAY)


def iso_date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


def roll_up(rows: Iterable[Usage], period: Period) -> list[tuple[int, Usage]]:
    """(period start, totals) per period and key, oldest first, then by key."""
    out: dict[tuple[int, str | None], Usage] = {}
    for r in rows:
        start = bucket_start(r.day, period)
        slot = out.get((start, r.key))
        if slot is None:
            slot = out[(start, r.key)] = Usage(day=day_of(start), key=r.key)
        slot.add(r)
    return sorted(((s, u) for (s, _), u in out.items()), key=lambda x: (x[0], x[1].key or ""))


def k_anonymous(
    groups: list[tuple[int, Usage]], k: int = K_ANONYMITY
) -> tuple[list[tuple[int, Usage]], int]:
    """The groups of at least ``k`` calls, and how many smaller groups were left out."""
    shown = [g for g in groups if g[1].calls >= k]
    return shown, len(groups) - len(shown)


# --- CSV -------------------------------------------------------------------------------------


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A value as a CSV cell that spreadsheets will not run: text starting like a formula
    (``= + - @``, tab, carriage return) gets a leading apostrophe (OWASP's advice)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA) else text
