"""Console sessions: the cookie, the CSRF and origin checks, and the three form posts that
start and end a session (sign-in, sign-out, accepting an invitation).

The session lives in the database (``web_sessions``); the cookie carries a random secret whose
SHA-256 is the row's key. It is the only cookie the platform sets: ``cc_session`` over HTTP,
``__Host-cc_session`` over HTTPS (the request's scheme), always ``HttpOnly; SameSite=Strict;
Path=/`` (and ``Secure`` over HTTPS), lasting at most ``--session-max``. A session ends when
revoked (sign-out; the member deactivated or deleted), ``--session-idle`` seconds after its last
use (any authenticated request, and the console's live socket), or ``--session-max`` after
sign-in, whichever comes first.

Every cookie-authenticated request that changes state carries the session's CSRF token
(``X-CSRF-Token``, or a ``csrf`` form field) and comes from our own origin (``Origin``, or
``Sec-Fetch-Site: same-origin`` where a browser sends no ``Origin``); sign-in and accepting an
invitation, which have no session yet, check the origin only. Sign-in is throttled per email
and per client /24 or /48 (:class:`control.accounts.Throttle`): 429 with ``Retry-After``.

A member with two-factor sign-in gets, for the right password, a *pending* session (the same
cookie, lasting ``--signin-code-window``) that signs nobody in, and a 303 to the code form;
a right code (or an unused recovery code) ends it and starts the real one; wrong codes are
throttled per member and per client prefix like passwords. Once signed in, an admin lands on
``/dashboard`` and everybody else on ``/console``. A password set through an invitation ends
every other session of the member.

The form posts answer HTML: a 303 to ``/console`` with the cookie on success, else the form
again with one message. That HTML comes from the web front's renderer when the app has one
(``app.state.form_page``, a :class:`FormPage`); until then from :func:`_form_page`, a
placeholder (see there).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response
from starlette.requests import HTTPConnection

from control import accounts
from control.api.deps import ApiError, ctx_of, now_of, retry_after
from control.api.relays import visitor_prefix
from control.lifecycle import active_staff, end_sessions_of, end_web_session
from control.metrics import metrics_of
from control.models import Staff, WebSession
from control.store import Store

COOKIE = "cc_session"
HOST_COOKIE = "__Host-cc_session"  # over HTTPS: Secure, no Domain, Path=/
MAX_FORM = 16 * 1024  # bytes of one form post
CONSOLE_PATH = "/console"
DASHBOARD_PATH = "/dashboard"
CODE_PATH = "/console/signin/code"
WRONG = "Email or password is wrong"
WRONG_CODE = (
    "code: this code is wrong or has expired; type the 6 digits your app shows now, "
    "or one of your recovery codes"
)

Secret = Annotated[str, Path(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]

router = APIRouter(include_in_schema=False)


# --- the HTML answers ----------------------------------------------------------------------------


def _pages(request: Request) -> Any:
    """The web front's page functions (``app.state.pages``, set by ``control.web.install``:
    this package may not import the web front)."""
    pages = getattr(request.app.state, "pages", None)
    if pages is None:
        raise RuntimeError("the web front is not installed: control.web.install(app)")
    return pages


def render_form(
    request: Request,
    form: str,
    *,
    status: int,
    error: str | None = None,
    field: str | None = None,
    values: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The HTML answer of a form post: ``form`` is ``"signin"`` or ``"invite"`` (the form again,
    ``error`` above it, about ``field``), or ``"error"`` (the sign-in form with the message)."""
    pages, values = _pages(request), values or {}
    response: Response
    if form == "invite":
        response = pages.invite(request, values.get("token", ""), error, status, field)
    elif form == "code":
        response = pages.code(request, values.get("csrf", ""), error, status)
    else:
        response = pages.signin(request, error, status, email=values.get("email", ""))
    response.headers["Cache-Control"] = "no-store"
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


# --- origin, cookie, CSRF ------------------------------------------------------------------------


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origins(conn: HTTPConnection) -> set[str]:
    """Our origin as this request reached us, and ``--public-url``'s if set."""
    scheme = {"ws": "http", "wss": "https"}.get(conn.url.scheme, conn.url.scheme)
    host = conn.headers.get("host") or conn.url.netloc
    out = {f"{scheme}://{host}".lower()}
    public = ctx_of(conn).settings.public_url
    if public:
        out.add(_origin(public))
    return out


def check_origin(request: Request) -> None:
    """403 unless the request comes from a page of ours."""
    origin = request.headers.get("origin")
    # Under our Referrer-Policy (no-referrer) a browser sends "Origin: null" with a form post;
    # Sec-Fetch-Site, which a page cannot forge, then says whether it came from our own page.
    if origin is not None and origin != "null":
        if origin.lower() in own_origins(request):
            return
        raise ApiError(403, "forbidden", "origin: this request comes from another site")
    if request.headers.get("sec-fetch-site") == "same-origin":
        return
    if origin == "null":
        raise ApiError(403, "forbidden", "origin: this request comes from another site")
    raise ApiError(403, "forbidden", "origin: a browser sends Origin with this request; none came")


def check_csrf(request: Request, session: WebSession, form_token: str | None = None) -> None:
    """403 unless the request echoes the session's CSRF token and comes from our origin."""
    presented = request.headers.get("x-csrf-token") or form_token
    if not presented or not accounts.same(presented, session.csrf):
        raise ApiError(
            403, "forbidden", "csrf: the CSRF token is missing or wrong; reload the page"
        )
    check_origin(request)


def cookie_name(conn: HTTPConnection) -> str:
    return HOST_COOKIE if conn.url.scheme in ("https", "wss") else COOKIE


def set_cookie(response: Response, request: Request, secret: str) -> None:
    https = request.url.scheme == "https"
    response.set_cookie(
        cookie_name(request),
        secret,
        max_age=int(ctx_of(request).settings.session_max),
        path="/",
        secure=https,
        httponly=True,
        samesite="strict",
    )


def clear_cookie(response: Response, request: Request) -> None:
    https = request.url.scheme == "https"
    response.delete_cookie(
        cookie_name(request), path="/", secure=https, httponly=True, samesite="strict"
    )


def session_state(session: WebSession, now: float, idle: float) -> str | None:
    """Why a session is over ("revoked", "expired", "idle"), or None while it is live."""
    if session.revoked_at is not None:
        return "revoked"
    if now >= session.expires_at:
        return "expired"
    if now - session.last_seen >= idle:
        return "idle"
    return None


async def load_session(
    conn: HTTPConnection, *, touch: bool = True, pending: bool = False
) -> tuple[WebSession, Staff] | None:
    """The live session the cookie names and its member (``last_seen`` moved to now), or None.

    A session whose second factor is still to come signs nobody in: it is found only with
    ``pending=True`` (the code form), and then only such a session is."""
    secret = conn.cookies.get(cookie_name(conn))
    if not secret or len(secret) > 128:
        return None
    ctx = ctx_of(conn)
    store = ctx.db()
    now = now_of(conn)
    session = await store.get_web_session(accounts.secret_hash(secret))
    if session is None or session_state(session, now, ctx.settings.session_idle) is not None:
        return None
    if session.pending != pending:
        return None
    member = await active_staff(store, session.tenant_id, session.staff_id)
    if member is None:
        return None
    if touch and not await store.touch_web_session(session.id_hash, now):
        return None
    return session, member


async def session_csrf(request: Request) -> str | None:
    """The signed-in session's CSRF token, or None: the web front's ``app.state.session_probe``
    (is this browser signed in, and what must its forms carry)."""
    found = await load_session(request)
    return None if found is None else found[0].csrf


async def cookie_session(request: Request) -> tuple[WebSession, Staff]:
    found = await load_session(request)
    if found is None:
        raise ApiError(401, "unauthorized", "sign in to the console first")
    return found


CookieAuth = Annotated[tuple[WebSession, Staff], Depends(cookie_session)]


async def start_session(request: Request, member: Staff, *, pending: bool = False) -> str:
    """A new session for ``member``; returns the cookie's secret. A ``pending`` one (the
    password was right, the second factor is to come) lasts ``--signin-code-window``."""
    ctx = ctx_of(request)
    now = now_of(request)
    secret = accounts.new_secret()
    end = now + (ctx.settings.signin_code_window if pending else ctx.settings.session_max)
    await ctx.db().create_web_session(
        WebSession(
            id_hash=accounts.secret_hash(secret),
            tenant_id=member.tenant_id,
            staff_id=member.id,
            csrf=accounts.new_secret(),
            created_at=now,
            last_seen=now,
            expires_at=end,
            pending=pending,
        )
    )
    return secret


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body of at most :data:`MAX_FORM` bytes (no
    body at all is an empty form)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not kind and request.headers.get("content-length", "0") == "0":
        return {}
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(
            415, "unsupported", "form: send the form as application/x-www-form-urlencoded"
        )
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM):
        raise ApiError(413, "too_big", f"form: at most {MAX_FORM} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise ApiError(413, "too_big", f"form: at most {MAX_FORM} bytes")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid", "form: not a valid form body") from None
    return dict(pairs)


def landing(member: Staff) -> str:
    """Where a member lands once signed in: an admin on the dashboard, others on the console."""
    return DASHBOARD_PATH if member.is_admin else CONSOLE_PATH


def _signed_in(request: Request, secret: str, to: str) -> Response:
    response = RedirectResponse(to, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    set_cookie(response, request, secret)
    return response


# --- the form posts ------------------------------------------------------------------------------


@router.post("/console/signin")
async def signin(request: Request) -> Response:
    """Email and password in; a session cookie and a 303 to the console out."""
    ctx = ctx_of(request)
    store = ctx.db()
    metrics = metrics_of(request.app)
    now = now_of(request)
    try:
        check_origin(request)
        form = await read_form(request)
    except ApiError as e:
        metrics.signin("refused")
        return render_form(request, "signin", status=e.status, error=e.message, field="form")
    given = form.get("email", "").strip().lower()[: accounts.MAX_EMAIL]
    password = form.get("password", "")
    values = {"email": given}
    network = f"signin@{visitor_prefix(request) or '-'}"
    wait = ctx.throttle.take([f"signin:{given}", network], now)
    if wait > 0:
        metrics.signin("throttled")
        metrics.throttle_refusals.labels(what="signin").inc()
        seconds = retry_after(wait)
        return render_form(
            request,
            "signin",
            status=429,
            error=f"Too many sign-in attempts: try again in {seconds} seconds",
            values=values,
            headers={"Retry-After": str(seconds)},
        )
    try:
        email = accounts.normalize_email(given)
    except ValueError:
        email = None
    member = await store.find_staff_by_email(email) if email else None
    stored = member.password_hash if member is not None else None
    ok = await asyncio.to_thread(accounts.verify_password, stored, password)
    if not ok or member is None or not member.active or stored is None:
        metrics.signin("wrong")
        return render_form(request, "signin", status=401, error=WRONG, field="email", values=values)
    ctx.throttle.forgive(f"signin:{given}")
    ctx.throttle.refund(network)
    if accounts.needs_rehash(stored):
        rehashed = await asyncio.to_thread(accounts.hash_password, password)
        await store.set_staff_fields(member.tenant_id, member.id, {"password_hash": rehashed})
    for pending in (False, True):  # a new sign-in replaces the browser's old session
        previous = await load_session(request, touch=False, pending=pending)
        if previous is not None:
            await end_web_session(store, previous[0], now)
    if member.totp_secret is not None:  # the second factor next, on the code form
        secret = await start_session(request, member, pending=True)
        return _signed_in(request, secret, CODE_PATH)
    metrics.signin("ok")
    return _signed_in(request, await start_session(request, member), landing(member))


async def second_factor(store: Store, member: Staff, code: str, now: float) -> str | None:
    """Check a member's second factor: ``"totp"`` (a current code not used before),
    ``"recovery"`` (an unused recovery code, now used), or None."""
    if member.totp_secret is None:
        return None
    step = accounts.totp_step(member.totp_secret, code, now)
    if step is not None:
        ok = await store.use_totp_step(member.tenant_id, member.id, step)
        return "totp" if ok else None
    hashed = accounts.recovery_hash(code)
    if hashed is not None and await store.use_recovery_code(
        member.tenant_id, member.id, hashed, now
    ):
        return "recovery"
    return None


def take_code_try(request: Request, member: Staff) -> None:
    """One try at a second-factor code (sign-in, enrolment), per member and per client
    prefix: 429 with ``Retry-After`` past the throttle."""
    ctx = ctx_of(request)
    keys = [f"code:{member.id}", f"code@{visitor_prefix(request) or '-'}"]  # forgive_code_tries
    wait = ctx.throttle.take(keys, now_of(request))
    if wait > 0:
        metrics_of(request.app).throttle_refusals.labels(what="code").inc()
        seconds = retry_after(wait)
        raise ApiError(
            429,
            "throttled",
            f"code: too many tries; try again in {seconds} seconds",
            {"Retry-After": str(seconds)},
        )


def forgive_code_tries(request: Request, member: Staff) -> None:
    """A right code clears the member's record and gives its network back the try."""
    throttle = ctx_of(request).throttle
    throttle.forgive(f"code:{member.id}")
    throttle.refund(f"code@{visitor_prefix(request) or '-'}")


@router.post(CODE_PATH)
async def signin_code(request: Request) -> Response:
    """The second step of a sign-in with two-factor: a code (``code``) from the member's
    authenticator app or a recovery code, on the pending session the password started."""
    ctx = ctx_of(request)
    store = ctx.db()
    metrics = metrics_of(request.app)
    now = now_of(request)
    found = await load_session(request, touch=False, pending=True)
    if found is None:
        metrics.signin("refused")
        return render_form(
            request,
            "signin",
            status=401,
            error="Your sign-in took too long or was ended: sign in again",
            field="form",
        )
    session, member = found
    values = {"csrf": session.csrf}
    try:
        form = await read_form(request)
        check_csrf(request, session, form.get("csrf"))
        take_code_try(request, member)
    except ApiError as e:
        metrics.signin("throttled" if e.status == 429 else "refused")
        return render_form(
            request, "code", status=e.status, error=e.message, values=values, headers=e.headers
        )
    how = await second_factor(store, member, form.get("code", ""), now)
    if how is None:
        metrics.signin("wrong_code")
        return render_form(request, "code", status=401, error=WRONG_CODE, values=values)
    forgive_code_tries(request, member)
    await end_web_session(store, session, now)  # a fresh session id once fully signed in
    metrics.signin("ok")
    return _signed_in(request, await start_session(request, member), landing(member))


@router.post("/console/signout")
async def signout(request: Request) -> Response:
    """Ends the session (CSRF-checked) and every console token minted under it; their live
    sockets close at once."""
    found = await load_session(request, touch=False)
    if found is None:  # or leaving a two-step sign-in half-way
        found = await load_session(request, touch=False, pending=True)
    if found is not None:
        try:
            form = await read_form(request)
            check_csrf(request, found[0], form.get("csrf"))
        except ApiError as e:
            return render_form(request, "error", status=e.status, error=e.message, field="csrf")
        await end_web_session(ctx_of(request).db(), found[0], now_of(request))
        metrics_of(request.app).web_sessions_revoked.labels(reason="signout").inc()
    response = RedirectResponse(CONSOLE_PATH, status_code=303)
    response.headers["Cache-Control"] = "no-store"
    clear_cookie(response, request)
    return response


def _invitation_error(request: Request, token: str, status: int, message: str) -> Response:
    return render_form(
        request, "invite", status=status, error=message, field="invitation", values={"token": token}
    )


@router.post("/console/invite/{token}")
async def accept_invitation(request: Request, token: Secret) -> Response:
    """The invited member's first password (``password``, ``password2``); then signed in."""
    ctx = ctx_of(request)
    store = ctx.db()
    now = now_of(request)
    values = {"token": token}
    try:
        check_origin(request)
        form = await read_form(request)
    except ApiError as e:
        return render_form(request, "invite", status=e.status, error=e.message, values=values)
    token_hash = accounts.secret_hash(token)
    invitation = await store.get_invitation(token_hash)
    if invitation is None:
        return _invitation_error(
            request, token, 404, "invitation: this link is not valid; ask for a new invitation"
        )
    if invitation.used_at is not None:
        return _invitation_error(
            request,
            token,
            410,
            "invitation: this link was already used; sign in, or ask for a new invitation",
        )
    if invitation.expires_at <= now:
        return _invitation_error(
            request, token, 410, "invitation: this link has expired; ask for a new invitation"
        )
    password, again = form.get("password", ""), form.get("password2", "")
    try:
        accounts.check_password(password)
    except ValueError as e:
        return render_form(
            request, "invite", status=422, error=f"password: {e}", field="password", values=values
        )
    if again != password:
        return render_form(
            request,
            "invite",
            status=422,
            error="password2: the two passwords differ",
            field="password2",
            values=values,
        )
    member = await active_staff(store, invitation.tenant_id, invitation.staff_id)
    if member is None:
        return _invitation_error(
            request, token, 410, "invitation: this staff account is no longer active"
        )
    hashed = await asyncio.to_thread(accounts.hash_password, password)
    if not await store.use_invitation(token_hash, now):  # used meanwhile
        return _invitation_error(request, token, 410, "invitation: this link was already used")
    await store.set_staff_fields(
        member.tenant_id, member.id, {"password_hash": hashed, "password_changed_at": now}
    )
    ended = await end_sessions_of(store, member, now)  # a new password ends every old session
    metrics_of(request.app).web_sessions_revoked.labels(reason="password").inc(ended)
    return _signed_in(request, await start_session(request, member), landing(member))
