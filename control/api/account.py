"""The signed-in member's own sign-in: their password and, for admins, two-factor sign-in.

- ``POST /v1/account/password`` (cookie + CSRF): ``current``, ``password``, ``password2``; the
  new password ends every other session of the member (and the console tokens minted under
  them, whose sockets close at once); this one stays.
- ``GET /v1/account/security`` (admin): whether two-factor sign-in is on, and how many
  recovery codes are left.
- ``POST /v1/account/totp`` (admin + CSRF): start enrolling: a fresh secret, its
  ``otpauth://`` URI and that URI as a QR code (an SVG ``data:`` URI, drawn here by segno: no
  third party sees the secret). Nothing changes for sign-in until it is confirmed.
- ``POST /v1/account/totp/confirm`` (admin + CSRF): ``code`` from the app; the secret is on
  from now, and 10 recovery codes come back, shown once (stored as SHA-256, each good once).
  Wrong codes are throttled like sign-in codes.
- ``POST /v1/account/totp/disable`` (admin + CSRF): ``password``; two-factor off, recovery
  codes gone.

Turning two-step sign-in on and off is written to the tenant's audit log.
"""

from __future__ import annotations

import asyncio

import segno
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from control import accounts
from control.api.dashboard import AdminAuth, AdminWrite, dashboard_audit
from control.api.deps import ctx_of, invalid, invalid_value, now_of
from control.api.sessions import CookieAuth, check_csrf, forgive_code_tries, take_code_try
from control.lifecycle import end_sessions_of
from control.metrics import metrics_of
from control.schemas import ErrorOut, Strict

router = APIRouter(
    prefix="/v1/account",
    include_in_schema=False,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}},
)

Password = Field(max_length=accounts.MAX_PASSWORD + 1)


class PasswordIn(Strict):
    current: str = Password
    password: str = Password
    password2: str = Password


class SecurityOut(BaseModel):
    totp: bool
    recovery_codes_left: int


class EnrolOut(BaseModel):
    secret: str  # base32, for typing into an app by hand
    uri: str  # otpauth://
    qr: str  # data:image/svg+xml URI of the QR code of ``uri``


class CodeIn(Strict):
    code: str = Field(max_length=64)


class RecoveryOut(BaseModel):
    recovery_codes: list[str]  # shown once


class DisableIn(Strict):
    password: str = Password


async def _check_current(stored: str | None, password: str, field: str) -> None:
    if not await asyncio.to_thread(accounts.verify_password, stored, password):
        raise invalid(field, "this is not your current password", "password_wrong")


@router.post("/password", status_code=204, responses={422: {"model": ErrorOut}})
async def change_password(request: Request, body: PasswordIn, auth: CookieAuth) -> Response:
    session, member = auth
    check_csrf(request, session)
    await _check_current(member.password_hash, body.current, "current")
    try:
        accounts.check_password(body.password)
    except ValueError as e:
        raise invalid_value("password", e) from None
    if body.password2 != body.password:
        raise invalid("password2", "the two new passwords differ", "password_mismatch")
    store = ctx_of(request).db()
    now = now_of(request)
    hashed = await asyncio.to_thread(accounts.hash_password, body.password)
    await store.set_staff_fields(
        member.tenant_id, member.id, {"password_hash": hashed, "password_changed_at": now}
    )
    ended = await end_sessions_of(store, member, now, keep=session.id_hash)
    metrics_of(request.app).web_sessions_revoked.labels(reason="password").inc(ended)
    return Response(status_code=204)


@router.get("/security")
async def security(request: Request, auth: AdminAuth) -> SecurityOut:
    member = auth[1]
    left = await ctx_of(request).db().count_recovery_codes(member.tenant_id, member.id)
    return SecurityOut(totp=member.totp_secret is not None, recovery_codes_left=left)


@router.post("/totp", status_code=201)
async def enrol(request: Request, auth: AdminWrite) -> EnrolOut:
    member = auth[1]
    secret = accounts.new_totp_secret()
    await (
        ctx_of(request).db().set_staff_fields(member.tenant_id, member.id, {"totp_pending": secret})
    )
    uri = accounts.totp_uri(secret, member.email or member.name)
    qr = segno.make(uri, error="m").svg_data_uri(scale=4, border=2)
    return EnrolOut(secret=secret, uri=uri, qr=qr)


@router.post("/totp/confirm", responses={409: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def confirm(request: Request, body: CodeIn, auth: AdminWrite) -> RecoveryOut:
    member = auth[1]
    if member.totp_pending is None:
        raise invalid(
            "code",
            "start setting up two-factor sign-in first",
            "totp_not_started",
            status=409,
            code="conflict",
        )
    take_code_try(request, member)
    now = now_of(request)
    step = accounts.totp_step(member.totp_pending, body.code, now)
    if step is None:
        raise invalid(
            "code", "this code is wrong or has expired; type the 6 digits shown now", "totp_wrong"
        )
    store = ctx_of(request).db()
    codes = accounts.new_recovery_codes()
    hashes = [h for h in map(accounts.recovery_hash, codes) if h is not None]
    async with store.transaction():  # all of it, audited, or nothing
        await store.replace_recovery_codes(member.tenant_id, member.id, hashes, now)
        await store.set_staff_fields(
            member.tenant_id,
            member.id,
            {"totp_secret": member.totp_pending, "totp_pending": None},
        )
        await store.use_totp_step(member.tenant_id, member.id, step)  # this code is spent
        await dashboard_audit(request, member, "totp_on")
    forgive_code_tries(request, member)
    return RecoveryOut(recovery_codes=codes)


@router.post("/totp/disable", status_code=204, responses={422: {"model": ErrorOut}})
async def disable(request: Request, body: DisableIn, auth: AdminWrite) -> Response:
    member = auth[1]
    await _check_current(member.password_hash, body.password, "password")
    store = ctx_of(request).db()
    async with store.transaction():
        await store.set_staff_fields(
            member.tenant_id, member.id, {"totp_secret": None, "totp_pending": None}
        )
        await store.replace_recovery_codes(member.tenant_id, member.id, [], now_of(request))
        await dashboard_audit(request, member, "totp_off")
    return Response(status_code=204)
