"""The web front, served by the control plane: the call page of a link (``/c/{public_id}``),
the staff console (``/console``, its sign-in and invitation forms), the business's dashboard
(``/dashboard``), the embed loader
(``/embed.js``) and the ES modules and styles under ``/static``.

| module | what |
|---|---|
| :mod:`~control.web.pages` | the server-rendered pages (Jinja2 templates in ``templates/``) |
| :mod:`~control.web.dashboard` | the business's dashboard (``/dashboard``), the two-factor code form |
| :mod:`~control.web.assets` | ``/static/...`` and ``/embed.js``: ETags, gzip, cache headers |
| :mod:`~control.web.headers` | the security headers (CSP and friends) on every response |
| :mod:`~control.web.catalogue` | the one string catalogue (``static/i18n.js``) as the server reads it |

The browser side lives in ``static/`` (docs/web.md). This package may import
:mod:`control.api`; the API never imports it (import-linter checks).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from control.web import assets, dashboard, pages
from control.web.headers import SecurityHeaders

router = APIRouter(include_in_schema=False)
router.include_router(pages.router)
router.include_router(dashboard.router)
router.include_router(assets.router)

__all__ = ["SecurityHeaders", "install", "router"]


def install(app: FastAPI) -> None:
    """Serve the web front from ``app``: its routes, the security headers on every response,
    and ``app.state.pages`` (:class:`~control.web.pages.Pages`) for the session routes."""
    app.include_router(router)
    app.add_middleware(SecurityHeaders)
    app.state.pages = pages.PAGES
