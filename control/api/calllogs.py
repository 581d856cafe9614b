"""Relay summaries in, call logs out: the HTTP side of call quality.

- ``POST /v1/nodes/summaries`` (the node secret): the relays' per-allocation summaries
  (docs/relay-summaries.md). Idempotent on ``(node_id, seq)``: a seq at or below the node's
  highest stored one is a replay and ignored; one more than ``--summary-seq-jump`` above it
  refuses the request (409 ``seq_jump``, counted), so no one can push a node's highest so far
  that its later summaries all look like replays. A node that enrolled must send its own
  credential (:mod:`control.api.nodes`). Each new summary becomes its allocation's
  newest record (counters are cumulative), joined to its call through the session token it
  carries; a token the control plane does not know, or one of no call, is counted and dropped.
- ``GET /v1/calllogs`` (a tenant key), ``GET /v1/calllogs/{call_id}``, ``GET /v1/calllogs.csv``
  (or ``?format=csv``): the tenant's calls with outcome, link, staff, media, bytes and
  quality, filtered and keyset-paged; one call with its allocations; the same as CSV.
- ``GET /v1/analytics`` (a tenant key): calls, answered rate, minutes and relayed bytes per UTC
  day, ISO week or month, overall or per link or answering staff member.
- ``GET /v1/operator/aggregates`` (the operator key): the same figures across tenants per relay
  region, anonymised: no tenant, no call, and no group of fewer than
  :data:`~control.quality.K_ANONYMITY` calls. The floor is applied to fixed buckets, whole UTC
  days per region, and only to days that are over; a week or month is the sum of its shown
  days. Any answer is then a union of buckets that each passed the floor, so no two answers
  (overlapping ranges, a day against its week, today now and later) differ by a group of
  fewer calls.

Visitors appear only as coarse facts: browser and OS family, the truncated prefix stored with
the call and the region the control plane's region map gives that prefix.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from control.api.deps import (
    PAGE,
    ApiError,
    Cursor,
    Id,
    IdQuery,
    Limit,
    NodeCaller,
    TenantId,
    Time,
    ctx_of,
    invalid,
    node_auth,
    node_may_speak_for,
    node_refused,
    not_found,
    now_of,
    operator,
    settled,
)
from control.models import Call, CallStatus, Link, SessionToken, Staff
from control.quality import (
    DAY,
    DEFAULT_SPAN,
    K_ANONYMITY,
    MAX_SPAN,
    AllocationQuality,
    CallStats,
    Flow,
    Leg,
    Period,
    Usage,
    bucket_start,
    csv_cell,
    day_of,
    iso_date,
    k_anonymous,
    loss_pct,
    roll_up,
)
from control.schemas import (
    AggregateOut,
    AggregatesOut,
    AllocationOut,
    AnalyticsOut,
    AnalyticsRowOut,
    CallLogDetailOut,
    CallLogOut,
    CallLogPageOut,
    DirectionIn,
    ErrorOut,
    FlowOut,
    LegOut,
    RelayCountersOut,
    SummariesIn,
    SummariesOut,
    UsageOut,
    VisitorOut,
)
from control.store import NotFound, Store

log = logging.getLogger("clickacall.control.calllogs")

router = APIRouter(prefix="/v1", responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}})

CSV_PAGE = 500


# --- ingestion -----------------------------------------------------------------------------------


def _flow(d: DirectionIn | None) -> Flow | None:
    if d is None:
        return None
    return Flow(packets=d.packets, bytes=d.bytes, lost=d.lost, jitter_ms=d.jitter_ms, mos=d.mos)


@router.post(
    "/nodes/summaries",
    responses={
        403: {"model": ErrorOut},
        409: {"model": ErrorOut},
        422: {"model": ErrorOut},
    },
)
async def summaries(
    request: Request, body: SummariesIn, caller: Annotated[NodeCaller, Depends(node_auth)]
) -> SummariesOut:
    """Per-allocation quality summaries from a relay node; replays count nothing twice."""
    await node_may_speak_for(request, caller, body.node_id)
    ctx = ctx_of(request)
    store = ctx.db()
    now = now_of(request)
    node = body.node_id
    highest = await store.summary_seq(node)
    top = max((s.seq for s in body.summaries), default=0)
    if top > highest + ctx.settings.summary_seq_jump:
        node_refused(request, "seq_jump")
        log.warning("summaries from node %s refused: seq %d is far past %d", node, top, highest)
        raise ApiError(
            409,
            "seq_jump",
            f"summary seq {top} is more than {ctx.settings.summary_seq_jump} past this node's "
            f"highest ({highest}): refused, nothing stored",
        )
    tokens: dict[str, SessionToken | None] = {}
    touched: dict[tuple[str, str], None] = {}  # (tenant, call) whose figures changed
    done: list[tuple[int, bool]] = []  # (seq, stored) to claim
    stored = replayed = dropped = 0
    for s in sorted(body.summaries, key=lambda s: s.seq):
        if s.seq <= highest:
            replayed += 1
            continue
        if s.token_id not in tokens:
            tokens[s.token_id] = await store.get_token(s.token_id)
        token = tokens[s.token_id]
        record = None
        if token is not None and token.call_id is not None and token.role is not None:
            record = AllocationQuality(
                tenant_id=token.tenant_id,
                call_id=token.call_id,
                node_id=node,
                allocation=s.allocation,
                token_id=s.token_id,
                role=token.role,
                seq=s.seq,
                started_at=s.started_at,
                at=s.at,
                final=s.final,
                to_peer=_flow(s.directions.to_peer),
                to_client=_flow(s.directions.to_client),
                streams=[st.model_dump() for st in s.streams],
                relay_dropped=s.relay.dropped,
                relay_rxq_overflow=s.relay.rxq_overflow,
                relay_delay_us_p99=s.relay.delay_us_p99,
            )
            try:
                await store.save_quality(record)
                touched[(record.tenant_id, record.call_id)] = None
            except NotFound:  # the call is gone (erased, purged), or a console token's "*"
                record = None
        done.append((s.seq, record is not None))
    for tenant_id, call_id in touched:
        await store.refresh_call_stats(tenant_id, call_id, now)
    # written first, claimed last: a crash in between replays into the same records
    for seq, kept in done:
        if not await store.claim_summary(node, seq, kept, now):
            replayed += 1  # delivered twice at once; the other delivery counted it
            continue
        highest = seq
        if kept:
            stored += 1
        else:
            dropped += 1
    if dropped or replayed:
        log.info(
            "summaries from node %s: %d stored, %d replayed, %d dropped (unknown token)",
            node,
            stored,
            replayed,
            dropped,
        )
    return SummariesOut(accepted=highest, stored=stored, replayed=replayed, dropped=dropped)


# --- call logs -----------------------------------------------------------------------------------


def _leg(leg: Leg | None) -> LegOut:
    leg = leg or Leg()
    return LegOut(loss_pct=leg.loss_pct, jitter_ms=leg.jitter_ms, mos=leg.mos)


class _Names:
    """Link and staff names of one tenant, read once per request."""

    def __init__(self, links: list[Link], staff: list[Staff]) -> None:
        self.links = {k.id: k for k in links}
        self.staff = {s.id: s.name for s in staff}

    @classmethod
    async def of(cls, store: Store, tenant_id: str) -> _Names:
        return cls(await store.list_links(tenant_id), await store.list_staff(tenant_id))


def _entry(request: Request, call: Call, stats: CallStats | None, names: _Names) -> CallLogOut:
    link = names.links.get(call.link_id)
    duration = None
    if call.answered_at is not None and call.ended_at is not None:
        duration = round(max(0.0, call.ended_at - call.answered_at), 3)
    region_map = ctx_of(request).settings.region_map
    return CallLogOut(
        id=call.id,
        created_at=call.created_at,
        answered_at=call.answered_at,
        ended_at=call.ended_at,
        duration=duration,
        outcome=call.status,
        link_id=call.link_id,
        link_name=link.name if link else None,
        staff_id=call.answered_by,
        staff_name=names.staff.get(call.answered_by) if call.answered_by else None,
        media=stats.media if stats else [],
        relay_region=call.relay_region,
        bytes=stats.bytes if stats else 0,
        from_visitor=_leg(stats.from_visitor if stats else None),
        to_visitor=_leg(stats.to_visitor if stats else None),
        mos=stats.mos if stats else None,
        quality_final=stats.final if stats else False,
        visitor=VisitorOut(
            browser=call.visitor_browser,
            os=call.visitor_os,
            prefix=call.visitor_prefix,
            region=region_map.region_for(call.visitor_prefix) if call.visitor_prefix else None,
        ),
    )


async def _settled(request: Request, call: Call, names: _Names) -> Call:
    """A ringing call past its ring timeout is shown (and stored) as missed, as elsewhere."""
    return await settled(request, call, names.links.get(call.link_id))


@dataclass(frozen=True, slots=True)
class _Filters:
    since: float | None
    until: float | None
    link: str | None
    staff: str | None
    outcome: CallStatus | None
    mos_below: float | None


def _filters(
    since: Time = None,
    until: Time = None,
    link: IdQuery = None,
    staff: IdQuery = None,
    outcome: CallStatus | None = None,
    mos_below: Annotated[float | None, Query(ge=1.0, le=5.0)] = None,
) -> _Filters:
    """Query parameters shared by the call log's list and CSV export."""
    if since is not None and until is not None and until < since:
        raise ApiError(422, "invalid", "'until' is before 'since'")
    return _Filters(since, until, link, staff, outcome, mos_below)


Filters = Annotated[_Filters, Depends(_filters)]
CallLogFilters = _Filters  # for the dashboard's twin of these routes (control.api.dashcalls)


async def _page(
    request: Request, tenant_id: str, f: _Filters, limit: int, cursor: str | None, names: _Names
) -> tuple[list[CallLogOut], str | None]:
    store = ctx_of(request).db()
    page = await store.list_call_log(
        tenant_id,
        status=f.outcome,
        since=f.since,
        until=f.until,
        link_id=f.link,
        staff_id=f.staff,
        mos_below=f.mos_below,
        limit=limit,
        cursor=cursor,
    )
    out = [_entry(request, await _settled(request, c, names), s, names) for c, s in page.entries]
    return out, page.next_cursor


@router.get("/calllogs", response_model=CallLogPageOut, responses={422: {"model": ErrorOut}})
async def list_calllogs(
    request: Request,
    tenant_id: TenantId,
    f: Filters,
    limit: Limit = PAGE,
    cursor: Cursor = None,
    fmt: Annotated[Literal["json", "csv"], Query(alias="format")] = "json",
) -> CallLogPageOut | Response:
    """The tenant's calls, newest first. Filters: ``since``/``until`` (creation time,
    inclusive/exclusive), ``link``, ``staff`` (who answered), ``outcome``, ``mos_below`` (the
    worse direction's MOS under it). ``format=csv`` is :func:`calllogs_csv`."""
    if fmt == "csv":
        return await _csv(request, tenant_id, f)
    names = await _Names.of(ctx_of(request).db(), tenant_id)
    calls, next_cursor = await _page(request, tenant_id, f, limit, cursor, names)
    return CallLogPageOut(calls=calls, next_cursor=next_cursor)


CSV_COLUMNS = (
    "call_id",
    "created_at",
    "answered_at",
    "ended_at",
    "duration_s",
    "outcome",
    "link_id",
    "link_name",
    "staff_id",
    "staff_name",
    "media",
    "relay_region",
    "bytes",
    "from_visitor_loss_pct",
    "from_visitor_jitter_ms",
    "from_visitor_mos",
    "to_visitor_loss_pct",
    "to_visitor_jitter_ms",
    "to_visitor_mos",
    "mos",
    "visitor_browser",
    "visitor_os",
    "visitor_prefix",
    "visitor_region",
)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return iso_date(ts) + "T" + _clock(ts) + "Z"


def _clock(ts: float) -> str:
    s = int(ts) % DAY
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


def _csv_row(e: CallLogOut) -> list[object]:
    fv, tv = e.from_visitor, e.to_visitor
    return [
        e.id,
        _iso(e.created_at),
        _iso(e.answered_at),
        _iso(e.ended_at),
        e.duration,
        str(e.outcome),
        e.link_id,
        e.link_name,
        e.staff_id,
        e.staff_name,
        "+".join(e.media),
        e.relay_region,
        e.bytes,
        fv.loss_pct,
        fv.jitter_ms,
        fv.mos,
        tv.loss_pct,
        tv.jitter_ms,
        tv.mos,
        e.mos,
        e.visitor.browser,
        e.visitor.os,
        e.visitor.prefix,
        e.visitor.region,
    ]


def _csv_lines(rows: list[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    for row in rows:
        w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()


async def _csv(request: Request, tenant_id: str, f: _Filters) -> StreamingResponse:
    names = await _Names.of(ctx_of(request).db(), tenant_id)
    # the first page is read before answering, so bad input is still a clean 4xx
    first, cursor = await _page(request, tenant_id, f, CSV_PAGE, None, names)

    async def body() -> AsyncIterator[str]:
        nonlocal cursor
        yield _csv_lines([list(CSV_COLUMNS), *(_csv_row(e) for e in first)])
        while cursor is not None:
            page, cursor = await _page(request, tenant_id, f, CSV_PAGE, cursor, names)
            yield _csv_lines([_csv_row(e) for e in page])

    return StreamingResponse(
        body(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="calllogs.csv"'},
    )


@router.get(
    "/calllogs.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, 422: {"model": ErrorOut}},
)
async def calllogs_csv(request: Request, tenant_id: TenantId, f: Filters) -> Response:
    """Every call matching the filters as CSV, streamed. Cells that a spreadsheet would take
    for a formula (starting with ``= + - @``) get a leading apostrophe."""
    return await _csv(request, tenant_id, f)


def _flow_out(flow: Flow | None) -> FlowOut | None:
    if flow is None:
        return None
    return FlowOut(
        packets=flow.packets,
        bytes=flow.bytes,
        lost=flow.lost,
        loss_pct=loss_pct(flow),
        jitter_ms=flow.jitter_ms,
        mos=flow.mos,
    )


def _allocation(q: AllocationQuality) -> AllocationOut:
    return AllocationOut(
        node_id=q.node_id,
        allocation=q.allocation,
        role=q.role,
        started_at=q.started_at,
        at=q.at,
        final=q.final,
        to_peer=_flow_out(q.to_peer),
        to_client=_flow_out(q.to_client),
        streams=q.streams,
        relay=RelayCountersOut(
            dropped=q.relay_dropped,
            rxq_overflow=q.relay_rxq_overflow,
            delay_us_p99=q.relay_delay_us_p99,
        ),
    )


@router.get("/calllogs/{call_id}")
async def get_calllog(request: Request, tenant_id: TenantId, call_id: Id) -> CallLogDetailOut:
    """One call with the newest quality record of each of its allocations."""
    store = ctx_of(request).db()
    call = await store.get_call(tenant_id, call_id)
    if call is None:
        raise not_found("call")
    names = await _Names.of(store, tenant_id)
    call = await _settled(request, call, names)
    stats = await store.get_call_stats(tenant_id, call_id)
    entry = _entry(request, call, stats, names)
    records = await store.list_quality(tenant_id, call_id)
    return CallLogDetailOut(**entry.model_dump(), allocations=[_allocation(q) for q in records])


# --- analytics -------------------------------------------------------------------------------------


def _range(
    period: Period, since: float | None, until: float | None, now: float
) -> tuple[float, float]:
    """[since, until): by default from a period-aligned start up to the end of today (UTC)."""
    end = (day_of(now) + 1) * DAY if until is None else until
    start = since if since is not None else bucket_start(day_of(end - DEFAULT_SPAN[period]), period)
    if end < start:
        raise invalid("until", "the end is before the start", "range_reversed")
    if end - start > MAX_SPAN[period]:
        days = MAX_SPAN[period] // DAY
        raise invalid(
            "since",
            f"a {period} range covers at most {days} days",
            "range_too_long",
            {"period": str(period), "days": days},
        )
    return float(start), float(end)


def _usage_out(start: float, u: Usage) -> dict[str, Any]:
    return UsageOut(
        start=float(start),
        date=iso_date(start),
        calls=u.calls,
        answered=u.answered,
        answered_rate=round(u.answered / u.calls, 4) if u.calls else None,
        minutes=round(u.seconds / 60.0, 2),
        bytes=u.bytes,
    ).model_dump()


Grouping = Literal["none", "link", "staff"]


@router.get("/analytics", responses={422: {"model": ErrorOut}})
async def analytics(
    request: Request,
    tenant_id: TenantId,
    period: Period = Period.DAY,
    by: Grouping = "none",
    since: Time = None,
    until: Time = None,
) -> AnalyticsOut:
    """Calls, answered rate, minutes (answered duration) and relayed bytes per UTC period
    (``day``, ``week`` from Monday, ``month``), overall or per link or answering staff member.
    Without ``until`` the range ends with today (UTC); without ``since`` it starts 30 days, 12
    weeks or a year earlier (period-aligned)."""
    return await tenant_analytics(request, tenant_id, period, by, since, until)


async def tenant_analytics(
    request: Request,
    tenant_id: str,
    period: Period,
    by: Grouping,
    since: float | None,
    until: float | None,
) -> AnalyticsOut:
    """The figures of ``GET /v1/analytics`` for ``tenant_id``; the dashboard's twin
    (:mod:`control.api.dashanalytics`) answers with the same."""
    store = ctx_of(request).db()
    start, end = _range(period, since, until, now_of(request))
    rows = await store.usage(tenant_id, start, end, None if by == "none" else by)
    buckets = roll_up(rows, period)
    names = await _Names.of(store, tenant_id) if by != "none" else _Names([], [])
    total = Usage(day=0, key=None)
    out = []
    for s, u in buckets:
        total.add(u)
        name = None
        if by == "link" and u.key is not None:
            link = names.links.get(u.key)
            name = link.name if link else None
        elif by == "staff" and u.key is not None:
            name = names.staff.get(u.key)
        out.append(AnalyticsRowOut(key=u.key, name=name, **_usage_out(s, u)))
    return AnalyticsOut(
        period=str(period),
        by=by,
        since=start,
        until=end,
        buckets=out,
        totals=UsageOut(**_usage_out(start, total)),
    )


@router.get(
    "/operator/aggregates", dependencies=[Depends(operator)], responses={422: {"model": ErrorOut}}
)
async def aggregates(
    request: Request, period: Period = Period.DAY, since: Time = None, until: Time = None
) -> AggregatesOut:
    """Anonymised usage across every tenant per relay region and period: no tenant, no call,
    and no region-day of fewer than five calls (how many were left out is ``suppressed``).
    ``since`` and ``until`` are widened to whole UTC days, and ``until`` stops at the start of
    today (a day still filling is not shown)."""
    now = now_of(request)
    start, end = _range(period, since, until, now)
    start = float(day_of(start) * DAY)
    end = float(min(-(-end // DAY), day_of(now)) * DAY)
    end = max(end, start)
    rows = await ctx_of(request).db().regional_usage(start, end)
    days, suppressed = k_anonymous([(r.day * DAY, r) for r in rows], K_ANONYMITY)
    shown = roll_up([u for _, u in days], period)
    groups = [
        AggregateOut(
            region=u.key,
            mean_mos=round(u.mos_sum / u.mos_calls, 3) if u.mos_calls else None,
            **_usage_out(s, u),
        )
        for s, u in shown
    ]
    return AggregatesOut(
        period=str(period),
        since=start,
        until=end,
        k=K_ANONYMITY,
        groups=groups,
        suppressed=suppressed,
    )
