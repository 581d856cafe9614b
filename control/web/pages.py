"""The server-rendered pages: the call page of a link, the staff console's shell, the sign-in
and set-password forms, and the friendly 404 page.

Pages are Jinja2 templates (``templates/``, autoescaped) that carry no inline script or style
(the CSP forbids both): each loads its ES module from ``/static`` and works as far as it can
without it (the forms are plain HTML forms; the call page says in ``<noscript>`` why it needs
JavaScript). Strings come from the one catalogue (:mod:`control.web.catalogue`), in English or
German from ``?lang=`` or Accept-Language.

What the cookie-session side (``control.api.sessions``, which may not import this package)
uses:

- :func:`render_signin`, :func:`render_invite` and :func:`render_console` to answer its form
  posts (a failed sign-in is the form again with one message and a 401, and so on), reachable
  without an import as ``request.app.state.pages`` (a :class:`Pages`), which :func:`install`
  sets;
- ``app.state.session_probe``: an ``async (request) -> str | None`` giving the signed-in
  session's CSRF token, or None. ``GET /console`` asks it whether to show the console or the
  sign-in form; without one, everybody is signed out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import jinja2
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from control.api.deps import ctx_of
from control.api.sessions import load_session
from control.ids import ID_PATTERN
from control.models import Media
from control.web import assets
from control.web.catalogue import negotiate, text

TEMPLATES: Final = Path(__file__).resolve().parent / "templates"
INVITE_TOKEN: Final = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
PUBLIC_ID: Final = re.compile(ID_PATTERN)
NO_STORE: Final = {"cache-control": "no-store"}

SessionProbe = Callable[[Request], Awaitable[str | None]]

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.globals["asset"] = assets.url

router = APIRouter(include_in_schema=False)


def lang_of(request: Request) -> str:
    """``en`` or ``de``: from ``?lang=``, else Accept-Language, else English."""
    return negotiate(request.query_params.get("lang"), request.headers.get("accept-language"))


def render(
    request: Request,
    template: str,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    lang = context.pop("lang", None) or lang_of(request)

    def t(key: str, **vars: str) -> str:
        return text(lang, key, **vars)

    html = _env.get_template(template).render(lang=lang, t=t, **context)
    return HTMLResponse(html, status_code=status, headers={**NO_STORE, **(headers or {})})


# --- what the session side calls -------------------------------------------------------------


def render_signin(
    request: Request,
    error: str | None = None,
    status: int = 200,
    email: str = "",
    subtitle: str = "page.console_title",
) -> HTMLResponse:
    """The sign-in form (``POST /console/signin``: ``email``, ``password``), with ``error``
    shown above it (and tied to the fields with ``aria-describedby``) and ``email`` kept;
    ``subtitle`` is the catalogue key of what it signs in to."""
    headers = {}
    if status == 429:
        headers["retry-after"] = "20"
    return render(
        request, "signin.html", status, headers, error=error, email=email, subtitle=subtitle
    )


def render_code(
    request: Request, csrf: str, error: str | None = None, status: int = 200
) -> HTMLResponse:
    """The second step of a two-step sign-in (``POST /console/signin/code``: ``code``); a 401
    is a wrong code, said in the page's language."""
    headers = {}
    if status == 429:
        headers["retry-after"] = "20"
    return render(
        request, "signin_code.html", status, headers, csrf=csrf, error=error, wrong=status == 401
    )


def render_invite(
    request: Request,
    token: str,
    error: str | None = None,
    status: int = 200,
    field: str | None = None,
) -> HTMLResponse:
    """The set-password form of an invitation (``POST /console/invite/{token}``: ``password``,
    ``password2``); ``field`` names the field ``error`` is about, which gets focus-worthy
    ``aria-invalid``."""
    return render(request, "invite.html", status, token=token, error=error, field=field)


def render_console(request: Request, csrf: str, dashboard: bool = False) -> HTMLResponse:
    """The console's shell: ``<clickacall-console>`` and a sign-out form carrying ``csrf``
    (and a link to the dashboard for a member who is an admin too)."""
    return render(request, "console.html", csrf=csrf, dashboard=dashboard)


@dataclasses.dataclass(frozen=True, slots=True)
class Pages:
    """The page functions, for code that may not import this package (``app.state.pages``)."""

    signin: Callable[..., HTMLResponse] = render_signin
    invite: Callable[..., HTMLResponse] = render_invite
    console: Callable[..., HTMLResponse] = render_console
    code: Callable[..., HTMLResponse] = render_code


PAGES: Final = Pages()


async def session_csrf(request: Request) -> str | None:
    probe: SessionProbe | None = getattr(request.app.state, "session_probe", None)
    return None if probe is None else await probe(request)


# --- routes ----------------------------------------------------------------------------------


def not_found_page(request: Request) -> HTMLResponse:
    return render(request, "notfound.html", 404)


@router.get("/c/{public_id}")
async def call_page(request: Request, public_id: str) -> Response:
    """A link's shareable call page (also what the embed button frames, with ``?embed=1``)."""
    if len(public_id) > 64 or not PUBLIC_ID.fullmatch(public_id):
        return not_found_page(request)
    store = ctx_of(request).db()
    link = await store.get_link_by_public_id(public_id)
    tenant = None if link is None else await store.get_tenant(link.tenant_id)
    if link is None or tenant is None:
        return not_found_page(request)
    media = " ".join(m.value for m in link.media if m in (Media.VIDEO, Media.VOICE)) or "voice"
    embedded = request.query_params.get("embed") in ("1", "true")
    page_url = str(request.url.replace(query="", fragment=""))
    return render(
        request,
        "call.html",
        link=link.public_id,
        link_name=link.name,
        business=tenant.name,
        media=media,
        embed=embedded,
        page_url=page_url,
    )


@router.get("/console")
async def console(request: Request) -> Response:
    csrf = await session_csrf(request)
    if csrf is None:
        return render_signin(request)
    found = await load_session(request, touch=False)
    if found is not None and not found[1].is_staff:  # an admin who answers no calls
        return RedirectResponse("/dashboard", status_code=303)
    return render_console(request, csrf, dashboard=found is not None and found[1].is_admin)


@router.get("/console/signin")
async def signin_form(request: Request) -> Response:
    if await session_csrf(request) is not None:
        return RedirectResponse("/console", status_code=303)
    return render_signin(request)


@router.get("/console/invite/{token}")
async def invite_form(request: Request, token: str) -> Response:
    if not INVITE_TOKEN.fullmatch(token):
        return not_found_page(request)
    return render_invite(request, token)
