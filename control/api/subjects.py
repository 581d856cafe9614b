"""Data-subject rights over HTTP, per tenant (its API key): find, export, correct and erase
what is held about one visitor, and read the audit log that records every such act.

A visitor is selected by exactly one of ``?ref=`` (the identifier the tenant captured and set
with ``PATCH /v1/calls/{id}``: an email, a phone number), ``?call_id=``, ``?call_ref=`` (the
reference the visitor was shown at the end of a call, ``K7Q2-M9XD``, read leniently: case,
dashes, spaces and Crockford's look-alikes) or ``?key=`` (the visitor key of
:mod:`control.privacy`, linking one visitor's calls within a day).

- ``GET /v1/subjects``: a JSON export of every matching call with its visitor fields and the
  rows hanging off it (declines, quality, ...);
- ``PATCH /v1/subjects``: correct visitor fields (``null`` removes one);
- ``DELETE /v1/subjects``: erase. ``mode=fields`` (the default) removes the calls' personal
  fields and keeps the anonymous calls, so counts and usage stay right; ``mode=delete``
  deletes the calls and everything hanging off them (calls in progress are refused: 409);
  either way the call's ``call_ref`` goes too, so the visitor's reference finds nothing after;
- ``GET /v1/audit``: the tenant's audit log, oldest first, paged by ``after=<seq>``; or with
  ``order=newest``, newest first, paged by ``before=<seq>``.

Each of the first four, and ``PATCH /v1/calls/{id}``, appends an audit entry with the API key
id as the actor (``staff:<id>`` when an admin did it in the dashboard, which calls the same
functions: :func:`export`, :func:`correct`, :func:`erase`, :func:`set_ref`, :func:`audit_page`) and the HMAC-SHA256 of the identifier under a server-side key as the subject
(never the identifier; ``GET /v1/audit?ref=`` finds an identifier's entries). A
``call_id`` of another tenant is a 404 like a missing one; another tenant's ``ref`` or ``key``
finds nothing, like an unknown one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, StringConstraints, field_validator

from control.accounts import parse_call_ref
from control.api.deps import (
    PAGE,
    ApiError,
    Id,
    IdQuery,
    Limit,
    TenantKey,
    ctx_of,
    invalid,
    invalid_value,
    not_found,
    now_of,
)
from control.lifecycle import settle
from control.models import (
    ERASED_CALL_FIELDS,
    FINAL_STATUSES,
    AuditEntry,
    Call,
    CallStatus,
)
from control.privacy import KEY_HEX, audit, audit_keys, subject_hash
from control.schemas import ErrorOut, Strict
from control.store import MAX_SUBJECT_CALLS

log = logging.getLogger("clickacall.control.api")

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
MAX_REF = 256
MAX_EXPORT = 1000  # calls in one export (``truncated`` says when more match)
Ref = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REF, pattern=_PRINTABLE),
]
Family = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=_PRINTABLE)
]

router = APIRouter(
    prefix="/v1",
    tags=["privacy"],
    responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)


Caller = TenantKey  # its id is the audit log's actor


@dataclasses.dataclass(frozen=True, slots=True)
class Selector:
    ref: str | None = None
    call_id: str | None = None
    key: str | None = None
    call_ref: str | None = None  # in its stored form, "K7Q2-M9XD"

    @property
    def by(self) -> str:
        for name in ("ref", "call_id", "call_ref"):
            if getattr(self, name) is not None:
                return name
        return "key"


def selector(
    ref: Annotated[str | None, Query(max_length=MAX_REF, pattern=_PRINTABLE)] = None,
    call_id: IdQuery = None,
    key: Annotated[str | None, Query(pattern=rf"^[0-9a-f]{{{KEY_HEX}}}$")] = None,
    call_ref: Annotated[str | None, Query(max_length=32)] = None,
) -> Selector:
    if ref is not None:
        ref = ref.strip()
        if not ref:
            raise invalid("ref", "must not be blank", "blank")
    if call_ref is not None:
        try:
            call_ref = parse_call_ref(call_ref)
        except ValueError as e:
            raise invalid_value("call_ref", e) from None
    if sum(v is not None for v in (ref, call_id, key, call_ref)) != 1:
        raise ApiError(422, "invalid", "give exactly one of ref, call_id, call_ref and key")
    return Selector(ref, call_id, key, call_ref)


Select = Annotated[Selector, Depends(selector)]


# --- bodies ------------------------------------------------------------------------------------


class SubjectCallOut(BaseModel):
    id: str
    call_ref: str | None  # the reference the visitor was shown
    link_id: str
    status: CallStatus
    created_at: float
    answered_at: float | None
    ended_at: float | None
    answered_by: str | None
    end_reason: str | None
    relay_region: str | None
    visitor_ref: str | None
    visitor_prefix: str | None
    visitor_browser: str | None
    visitor_os: str | None
    visitor_key: str | None
    records: dict[str, list[dict[str, Any]]] = {}  # rows hanging off the call, by table

    @classmethod
    def of(cls, c: Call, records: dict[str, list[dict[str, Any]]] | None = None) -> SubjectCallOut:
        return cls(
            id=c.id,
            call_ref=c.call_ref,
            link_id=c.link_id,
            status=c.status,
            created_at=c.created_at,
            answered_at=c.answered_at,
            ended_at=c.ended_at,
            answered_by=c.answered_by,
            end_reason=c.end_reason,
            relay_region=c.relay_region,
            visitor_ref=c.visitor_ref,
            visitor_prefix=c.visitor_prefix,
            visitor_browser=c.visitor_browser,
            visitor_os=c.visitor_os,
            visitor_key=c.visitor_key,
            records=records or {},
        )


class SubjectOut(BaseModel):
    subject: str | None  # SHA-256 of the identifier, as the audit log shows it
    exported_at: float
    calls: list[SubjectCallOut]
    truncated: bool  # more calls match than one export holds (MAX_EXPORT, oldest first)


class CallRefIn(Strict):
    visitor_ref: Ref | None  # null removes it


def _check_prefix(v: str | None) -> str | None:
    if v is None:
        return v
    try:
        net = ipaddress.ip_network(v.strip(), strict=True)
    except ValueError:
        raise ValueError("must be a network such as 192.0.2.0/24 or 2001:db8::/48") from None
    if net.prefixlen > (24 if net.version == 4 else 48):
        raise ValueError("at most a /24 (IPv4) or /48 (IPv6) of a visitor's address is kept")
    return str(net)


class SubjectPatch(Strict):
    """Visitor fields to set on every selected call; ``null`` removes one."""

    visitor_ref: Ref | None = None
    visitor_prefix: str | None = None
    visitor_browser: Family | None = None
    visitor_os: Family | None = None

    @field_validator("visitor_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return _check_prefix(v)


class ChangedOut(BaseModel):
    calls: list[str]  # ids of the calls changed (or deleted)
    fields: list[str]  # the visitor fields set or removed; empty when the calls were deleted
    mode: Literal["correct", "fields", "delete"]


class AuditOut(BaseModel):
    seq: int
    at: float
    actor: str
    action: str
    subject: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, e: AuditEntry) -> AuditOut:
        return cls(
            seq=e.seq,
            at=e.at,
            actor=e.actor,
            action=e.action,
            subject=e.subject,
            details=dict(e.details),
        )


class AuditPageOut(BaseModel):
    entries: list[AuditOut]
    next_after: int | None  # pass as ``after=`` for the next page; None: no more
    next_before: int | None = None  # order=newest: pass as ``before=`` for the next page


# --- helpers -------------------------------------------------------------------------------------


async def _find(request: Request, tenant_id: str, sel: Selector, limit: int) -> list[Call]:
    store = ctx_of(request).db()
    calls = await store.find_subject_calls(
        tenant_id,
        ref=sel.ref,
        call_id=sel.call_id,
        key=sel.key,
        call_ref=sel.call_ref,
        limit=limit,
    )
    if sel.call_id is not None and not calls:
        raise not_found("call")
    return calls


def _hash(request: Request, ref: str) -> str:
    """An identifier as the audit log keeps it (under the first audit key)."""
    return subject_hash(ref, audit_keys(ctx_of(request).settings)[0])


def _subject(request: Request, sel: Selector, calls: list[Call]) -> str | None:
    """The hashed identifier: the one asked for, or the one the selected calls share."""
    if sel.ref is not None:
        return _hash(request, sel.ref)
    refs = {c.visitor_ref for c in calls if c.visitor_ref is not None}
    return _hash(request, refs.pop()) if len(refs) == 1 else None


async def write_audit(
    request: Request,
    tenant_id: str,
    actor: str,
    action: str,
    subject: str | None,
    **details: Any,
) -> None:
    """Append one entry to ``tenant_id``'s audit log (``actor``: an API key's id,
    ``staff:<id>`` for an admin in the dashboard, ``operator``)."""
    entry = AuditEntry(
        tenant_id=tenant_id,
        at=now_of(request),
        actor=actor,
        action=action,
        subject=subject,
        details=details,
    )
    await audit(request.app, ctx_of(request).db(), entry)


# --- what the API and the dashboard both do ------------------------------------------------------


async def set_ref(
    request: Request, tenant_id: str, actor: str, call_id: str, body: CallRefIn
) -> SubjectCallOut:
    """Set (or with null remove) one call's ``visitor_ref``; audited."""
    store = ctx_of(request).db()
    call = await store.get_call(tenant_id, call_id)
    if call is None:
        raise not_found("call")
    before = call.visitor_ref
    async with store.transaction():  # the change and its audit entry, or neither
        await store.set_call_fields(tenant_id, [call.id], {"visitor_ref": body.visitor_ref})
        await write_audit(
            request,
            tenant_id,
            actor,
            "set_ref",
            _hash(request, body.visitor_ref)
            if body.visitor_ref is not None
            else _hash(request, before)
            if before is not None
            else None,
            call_id=call.id,
            previous=None if before is None else _hash(request, before),
        )
    call = dataclasses.replace(call, visitor_ref=body.visitor_ref)
    return SubjectCallOut.of(call)


async def export(request: Request, tenant_id: str, actor: str, sel: Selector) -> SubjectOut:
    """Everything held about the selected visitor; audited as ``access``."""
    store = ctx_of(request).db()
    calls = await _find(request, tenant_id, sel, MAX_EXPORT + 1)
    truncated = len(calls) > MAX_EXPORT
    calls = calls[:MAX_EXPORT]
    out = [SubjectCallOut.of(c, await store.call_records(c.tenant_id, c.id)) for c in calls]
    subject = _subject(request, sel, calls)
    await write_audit(
        request, tenant_id, actor, "access", subject, by=sel.by, calls=[c.id for c in calls]
    )
    return SubjectOut(subject=subject, exported_at=now_of(request), calls=out, truncated=truncated)


async def correct(
    request: Request, tenant_id: str, actor: str, sel: Selector, body: SubjectPatch
) -> ChangedOut:
    """Correct the visitor fields of every selected call; audited."""
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise ApiError(422, "invalid", "nothing to change: give at least one visitor field")
    calls = await _find(request, tenant_id, sel, MAX_SUBJECT_CALLS)
    ids = [c.id for c in calls]
    details: dict[str, Any] = {"by": sel.by, "calls": ids, "fields": sorted(changes)}
    if changes.get("visitor_ref") is not None:
        details["new_subject"] = _hash(request, changes["visitor_ref"])
    store = ctx_of(request).db()
    async with store.transaction():
        await store.set_call_fields(tenant_id, ids, changes)
        await write_audit(
            request, tenant_id, actor, "correct", _subject(request, sel, calls), **details
        )
    return ChangedOut(calls=ids, fields=sorted(changes), mode="correct")


async def erase(
    request: Request,
    tenant_id: str,
    actor: str,
    sel: Selector,
    mode: Literal["fields", "delete"],
) -> ChangedOut:
    """Erase the selected visitor (their calls' personal fields, or the calls); audited."""
    ctx = ctx_of(request)
    store = ctx.db()
    now = now_of(request)
    calls = await _find(request, tenant_id, sel, MAX_SUBJECT_CALLS)
    subject = _subject(request, sel, calls)
    ids = [c.id for c in calls]
    if mode == "delete":
        for call in calls:
            if call.status in FINAL_STATUSES:
                continue
            link = await store.get_link(call.tenant_id, call.link_id)
            call = await settle(store, call, link, now, ctx.settings.ring_timeout, ctx.policy)
            if call.status not in FINAL_STATUSES:
                raise ApiError(
                    409,
                    "call_in_progress",
                    f"call {call.id} is still in progress: erase its fields, or delete it "
                    "once it has ended",
                )
    fields = [] if mode == "delete" else sorted(ERASED_CALL_FIELDS)
    async with store.transaction():  # erased and audited, or neither
        if mode == "delete":
            await store.delete_calls(tenant_id, ids)
        else:
            await store.erase_calls(tenant_id, ids)
        await write_audit(
            request,
            tenant_id,
            actor,
            mode if mode == "delete" else "erase",
            subject,
            by=sel.by,
            calls=ids,
            fields=fields,
        )
    return ChangedOut(calls=ids, fields=fields, mode=mode)


async def audit_page(
    request: Request,
    tenant_id: str,
    limit: int,
    *,
    after: int = 0,
    before: int | None = None,
    newest: bool = False,
    ref: str | None = None,
) -> AuditPageOut:
    """One page of the audit log: oldest first after ``after``, or newest first before
    ``before``; with ``ref``, only that identifier's entries (matched under every key)."""
    subjects = None
    if ref is not None:
        keys = audit_keys(ctx_of(request).settings)[:16]
        subjects = list(dict.fromkeys(subject_hash(ref.strip(), k) for k in keys))
    entries = (
        await ctx_of(request)
        .db()
        .list_audit(tenant_id, after, limit, subjects, before=before, newest=newest)
    )
    more = len(entries) == limit
    last = entries[-1].seq if more else None
    return AuditPageOut(
        entries=[AuditOut.of(e) for e in entries],
        next_after=None if newest else last,
        next_before=last if newest else None,
    )


# --- endpoints -----------------------------------------------------------------------------------


@router.patch("/calls/{call_id}")
async def set_visitor_ref(
    request: Request,
    caller: Caller,
    call_id: Id,
    body: CallRefIn,
) -> SubjectCallOut:
    """Set (or with null remove) the identifier the tenant captured for this call's visitor."""
    return await set_ref(request, caller.tenant_id, caller.id, call_id, body)


@router.get("/subjects")
async def export_subject(request: Request, caller: Caller, sel: Select) -> SubjectOut:
    """Everything held about one visitor, as JSON."""
    return await export(request, caller.tenant_id, caller.id, sel)


@router.patch("/subjects")
async def correct_subject(
    request: Request, caller: Caller, sel: Select, body: SubjectPatch
) -> ChangedOut:
    """Correct the visitor fields of every selected call."""
    return await correct(request, caller.tenant_id, caller.id, sel, body)


@router.delete("/subjects", responses={409: {"model": ErrorOut}})
async def erase_subject(
    request: Request,
    caller: Caller,
    sel: Select,
    mode: Literal["fields", "delete"] = "fields",
) -> ChangedOut:
    """Erase one visitor: remove the personal fields of their calls (the default: the calls
    stay, anonymous, in counts and usage) or delete the calls (``mode=delete``)."""
    return await erase(request, caller.tenant_id, caller.id, sel, mode)


@router.get("/audit")
async def read_audit(
    request: Request,
    caller: Caller,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Limit = PAGE,
    ref: Annotated[str | None, Query(min_length=1, max_length=MAX_REF, pattern=_PRINTABLE)] = None,
    order: Literal["oldest", "newest"] = "oldest",
    before: Annotated[int | None, Query(ge=1)] = None,
) -> AuditPageOut:
    """The tenant's audit log, oldest first (``order=newest``: newest first, paged by
    ``before``); with ``ref``, only the entries about that identifier (matched under every
    audit key)."""
    return await audit_page(
        request,
        caller.tenant_id,
        limit,
        after=after,
        before=before,
        newest=order == "newest",
        ref=ref,
    )
