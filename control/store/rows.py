"""Rows to records and records to column values, the same for both back-ends.

A row is a ``sqlite3.Row`` or an ``asyncpg.Record``: both index by column name. ``as_<record>``
decodes one; ``<record>_values`` and the helpers beside them give the values a statement binds.
JSON columns travel as text (``jsonb`` on PostgreSQL), booleans come back as 0/1 from SQLite,
and REAL/double columns come back as floats from both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from control.models import (
    ApiKey,
    AuditEntry,
    Call,
    Callback,
    CallStatus,
    Invitation,
    Link,
    Media,
    OpeningHours,
    Presence,
    Purge,
    RelayNode,
    Role,
    SessionToken,
    Staff,
    Tenant,
    WebSession,
)
from control.quality import AllocationQuality, CallStats, Flow, Leg, Usage

Row = Any  # sqlite3.Row or asyncpg.Record: both index by column name
T = TypeVar("T")


def to_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def from_json(text: Any) -> Any:
    return json.loads(text) if isinstance(text, str | bytes) else text


def opt_float(v: float | None) -> float | None:
    return None if v is None else float(v)


def hours_json(hours: OpeningHours | None) -> str | None:
    if hours is None:
        return None
    return to_json({"timezone": hours.timezone, "windows": [list(w) for w in hours.windows]})


def _hours(text: Any) -> OpeningHours | None:
    data = from_json(text)
    if data is None:
        return None
    windows = [(int(d), int(s), int(e)) for d, s, e in data["windows"]]
    return OpeningHours(timezone=str(data["timezone"]), windows=windows)


def _record(
    make: Callable[..., T], fields: tuple[str, ...], **decode: Callable[[Any], Any]
) -> Callable[[Row], T]:
    """A row decoder: ``make(**{field: decode.get(field, as-is)(row[field])})``.

    Drivers return floats for REAL/double columns; JSON, enums and SQLite's 0/1 need a decoder.
    Every model field is read from its column, so a new model field needs a migration.
    """

    def build(r: Row) -> T:
        return make(**{f: decode[f](r[f]) if f in decode else r[f] for f in fields})

    return build


def _jlist(text: Any) -> list[Any]:
    return list(from_json(text))


def _slots(cls: Any) -> tuple[str, ...]:
    return tuple(cls.__slots__)


def _opt(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else conv(v)


def _jdict(text: Any) -> dict[str, Any]:
    return dict(from_json(text) or {})


as_tenant = _record(Tenant, _slots(Tenant), allowed_regions=_jlist, click_limits=_jdict)
as_key = _record(ApiKey, _slots(ApiKey), key_hash=bytes)
as_staff = _record(
    Staff,
    _slots(Staff),
    groups=_jlist,
    active=bool,
    roles=_jlist,
    presence=Presence,
    missed_rings=int,
)
as_link = _record(
    Link,
    _slots(Link),
    media=lambda v: [Media(m) for m in from_json(v)],
    ring_staff=_jlist,
    ring_groups=_jlist,
    hours=_hours,
    active=bool,
    relay_only=bool,
)
as_call = _record(
    Call,
    _slots(Call),
    status=CallStatus,
    media=_opt(Media),
    visitor_check=_opt(lambda v: dict(from_json(v))),
    callback_state=_opt(Callback),
    rung=_opt(_jlist),
)
as_token = _record(SessionToken, _slots(SessionToken), role=_opt(Role))
as_node = _record(RelayNode, _slots(RelayNode), urls=_jlist, draining=bool)

# the web front
as_web_session = _record(WebSession, _slots(WebSession), pending=bool)
as_invitation = _record(Invitation, _slots(Invitation))

# privacy
as_audit = _record(AuditEntry, _slots(AuditEntry), details=lambda v: dict(from_json(v)), seq=int)
as_purge = _record(Purge, _slots(Purge), calls=int, audit_entries=int, seq=int)


def columns(r: Row) -> list[str]:
    """A row's column names (iterating a row gives its values)."""
    return list(r.keys())


def plain(value: Any) -> Any:
    """A column value as JSON can carry it (bytes as hex)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


CALL_MUTABLE = [
    "status",
    "answered_at",
    "ended_at",
    "answered_by",
    "end_reason",
    "relay_node",
    "relay_region",
    "visitor_prefix",
    "visitor_browser",
    "visitor_os",
    "visitor_ref",
    "visitor_key",
]


# written when a call is created, then only by their own store methods (a state change racing
# a connection check or a callback request cannot undo it)
CALL_FIXED = [
    "call_ref",
    "media",
    "visitor_check",
    "callback_state",
    "callback_at",
    "callback_done_by",
    "rung",
]


def call_fixed(c: Call) -> list[Any]:
    """The values of :data:`CALL_FIXED`, in that order."""
    return [
        c.call_ref,
        None if c.media is None else str(c.media),
        None if c.visitor_check is None else to_json(c.visitor_check),
        None if c.callback_state is None else str(c.callback_state),
        opt_float(c.callback_at),
        c.callback_done_by,
        None if c.rung is None else to_json(list(c.rung)),
    ]


def call_mutable(c: Call) -> list[Any]:
    """The values of :data:`CALL_MUTABLE`, in that order."""
    return [
        str(c.status),
        opt_float(c.answered_at),
        opt_float(c.ended_at),
        c.answered_by,
        c.end_reason,
        c.relay_node,
        c.relay_region,
        c.visitor_prefix,
        c.visitor_browser,
        c.visitor_os,
        c.visitor_ref,
        c.visitor_key,
    ]


# --- call logs and quality ---------------------------------------------------------------------


def _flow_values(prefix: str, flow: Flow | None) -> dict[str, Any]:
    if flow is None:
        return {f"{prefix}_{k}": None for k in ("packets", "bytes", "lost", "jitter_ms", "mos")}
    return {
        f"{prefix}_packets": int(flow.packets),
        f"{prefix}_bytes": int(flow.bytes),
        f"{prefix}_lost": int(flow.lost),
        f"{prefix}_jitter_ms": float(flow.jitter_ms),
        f"{prefix}_mos": opt_float(flow.mos),
    }


def _flow(r: Row, prefix: str) -> Flow | None:
    if r[f"{prefix}_packets"] is None:
        return None
    return Flow(
        packets=int(r[f"{prefix}_packets"]),
        bytes=int(r[f"{prefix}_bytes"]),
        lost=int(r[f"{prefix}_lost"]),
        jitter_ms=float(r[f"{prefix}_jitter_ms"] or 0.0),
        mos=_opt(float)(r[f"{prefix}_mos"]),
    )


def quality_values(q: AllocationQuality) -> dict[str, Any]:
    return {
        "tenant_id": q.tenant_id,
        "call_id": q.call_id,
        "node_id": q.node_id,
        "allocation": q.allocation,
        "token_id": q.token_id,
        "role": str(Role(q.role)),
        "seq": int(q.seq),
        "started_at": float(q.started_at),
        "at": float(q.at),
        "final": bool(q.final),
        **_flow_values("to_peer", q.to_peer),
        **_flow_values("to_client", q.to_client),
        "streams": to_json(q.streams),
        "relay_dropped": int(q.relay_dropped),
        "relay_rxq_overflow": int(q.relay_rxq_overflow),
        "relay_delay_us_p99": int(q.relay_delay_us_p99),
    }


def as_quality(r: Row) -> AllocationQuality:
    return AllocationQuality(
        tenant_id=r["tenant_id"],
        call_id=r["call_id"],
        node_id=r["node_id"],
        allocation=r["allocation"],
        token_id=r["token_id"],
        role=Role(r["role"]),
        seq=int(r["seq"]),
        started_at=float(r["started_at"]),
        at=float(r["at"]),
        final=bool(r["final"]),
        to_peer=_flow(r, "to_peer"),
        to_client=_flow(r, "to_client"),
        streams=_jlist(r["streams"]),
        relay_dropped=int(r["relay_dropped"]),
        relay_rxq_overflow=int(r["relay_rxq_overflow"]),
        relay_delay_us_p99=int(r["relay_delay_us_p99"]),
    )


_STATS_COLS = (
    "tenant_id",
    "call_id",
    "media",
    "allocations",
    "final",
    "bytes",
    "from_visitor_loss_pct",
    "from_visitor_jitter_ms",
    "from_visitor_mos",
    "to_visitor_loss_pct",
    "to_visitor_jitter_ms",
    "to_visitor_mos",
    "mos",
    "relay_dropped",
    "updated_at",
)
# call_stats columns (table alias s) as s_<name>, so they sit beside a call's own columns in one
# row; as_stats reads them back
STATS_SELECT = ", ".join(f"s.{c} AS s_{c}" for c in _STATS_COLS)


def stats_values(s: CallStats) -> dict[str, Any]:
    legs = {
        f"{name}_{k}": opt_float(getattr(leg, k))
        for name, leg in (("from_visitor", s.from_visitor), ("to_visitor", s.to_visitor))
        for k in ("loss_pct", "jitter_ms", "mos")
    }
    return {
        "tenant_id": s.tenant_id,
        "call_id": s.call_id,
        "media": to_json(s.media),
        "allocations": int(s.allocations),
        "final": bool(s.final),
        "bytes": int(s.bytes),
        **legs,
        "mos": opt_float(s.mos),
        "relay_dropped": int(s.relay_dropped),
        "updated_at": float(s.updated_at),
    }


def as_usage(r: Row) -> Usage:
    return Usage(
        day=int(r["day"]),
        key=r["grp"],
        calls=int(r["calls"]),
        answered=int(r["answered"] or 0),
        seconds=float(r["seconds"] or 0),
        bytes=int(r["bytes"] or 0),
        mos_sum=float(r["mos_sum"] or 0),
        mos_calls=int(r["mos_calls"] or 0),
    )


def as_stats(r: Row) -> CallStats | None:
    """The call's figures from the ``s_`` columns of :data:`STATS_SELECT`; None when the call
    has no ``call_stats`` row (a LEFT JOIN that found nothing)."""
    if r["s_updated_at"] is None:
        return None

    def leg(name: str) -> Leg:
        return Leg(*(_opt(float)(r[f"s_{name}_{k}"]) for k in ("loss_pct", "jitter_ms", "mos")))

    return CallStats(
        tenant_id=r["s_tenant_id"],
        call_id=r["s_call_id"],
        media=_jlist(r["s_media"]),
        allocations=int(r["s_allocations"]),
        final=bool(r["s_final"]),
        bytes=int(r["s_bytes"]),
        from_visitor=leg("from_visitor"),
        to_visitor=leg("to_visitor"),
        mos=_opt(float)(r["s_mos"]),
        relay_dropped=int(r["s_relay_dropped"]),
        updated_at=float(r["s_updated_at"]),
    )
