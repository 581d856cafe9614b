"""The business's dashboard pages: ``/dashboard`` and ``/dashboard/{section}``, and the code
form of a two-factor sign-in (``/console/signin/code``).

Every dashboard URL is the same server-rendered shell (``templates/dashboard.html``): the
business's name, the nav as plain links (they work without JavaScript), a sign-out form and
``<clickacall-dashboard section=...>``, whose ES modules (``static/dashboard/``) draw the
section from the dashboard's JSON routes (:mod:`control.api.dashboard`,
:mod:`control.api.account`) and move between sections without reloading.

Who sees what, from the cookie session alone (the tenant is the session's, never the
request's): signed out, the sign-in form (the console's, posting to ``/console/signin``); a
signed-in member who is not an admin, a 403 page pointing to the console; an admin, the
section. An unknown section is the 404 page. ``/dashboard/calls/{id}`` is the Calls section
showing one call (``call=...``); a call the business does not have is the 404 page.
"""

from __future__ import annotations

import re
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from control.api.deps import ctx_of
from control.api.sessions import load_session
from control.ids import ID_PATTERN
from control.web.pages import render, render_code, render_signin

# the nav, in order ("home" is /dashboard itself)
SECTIONS: Final = (
    "home",
    "links",
    "staff",
    "calls",
    "analytics",
    "privacy",
    "webhooks",
    "keys",
    "settings",
)

router = APIRouter(include_in_schema=False)
ID: Final = re.compile(ID_PATTERN)


def _not_found(request: Request) -> Response:
    """The dashboard's 404 page: it speaks to the business (the call page's 404 speaks to a
    visitor about a call link) and leads back to the dashboard."""
    return render(request, "notfound.html", 404, key="dash.notfound", back="/dashboard")


async def _shell(request: Request, section: str, call: str | None = None) -> Response:
    found = await load_session(request)
    if found is None:
        return render_signin(request, subtitle="dash.title")
    session, member = found
    if not member.is_admin:
        return render(request, "forbidden.html", 403, csrf=session.csrf)
    store = ctx_of(request).db()
    if call is not None and (
        not ID.match(call) or await store.get_call(member.tenant_id, call) is None
    ):
        return _not_found(request)  # another business's call, or none
    tenant = await store.get_tenant(member.tenant_id)
    return render(
        request,
        "dashboard.html",
        section=section,
        sections=SECTIONS,
        csrf=session.csrf,
        business=tenant.name if tenant is not None else "",
        name=member.name,
        console=member.is_staff,
        call=call,
    )


@router.get("/dashboard")
async def home(request: Request) -> Response:
    return await _shell(request, "home")


@router.get("/dashboard/{section}")
async def section(request: Request, section: str) -> Response:
    if section not in SECTIONS or section == "home":
        return _not_found(request)
    return await _shell(request, section)


@router.get("/dashboard/calls/{call_id}")
async def call_page(request: Request, call_id: str) -> Response:
    """One call's detail page (the Calls section, drawn with ``call=...``)."""
    return await _shell(request, "calls", call_id)


@router.get("/console/signin/code")
async def code_form(request: Request) -> Response:
    """The code form while a two-factor sign-in waits for its code; else back to sign-in."""
    found = await load_session(request, touch=False, pending=True)
    if found is None:
        return RedirectResponse("/console", status_code=303)
    return render_code(request, found[0].csrf)
