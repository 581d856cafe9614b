"""What the dashboard's Links section asks with its cookie session: the business's links (the
buttons and shareable URLs visitors click), and each link's QR code for print.

The same rules as :mod:`control.api.dashboard`: an admin of the business (:data:`AdminAuth`;
anyone else 403, signed out 401), the tenant from the session, never from the request (another
business's link is a 404); changes carry the CSRF token and come from our origin
(:data:`AdminWrite`). Creating and editing go through the API's own handlers
(:mod:`control.api.links`) with the API's bodies (:class:`~control.schemas.LinkIn`,
:class:`~control.schemas.LinkPatch`), so bad input is refused with the same 422 naming the
field, before anything is stored.

- ``GET /v1/dashboard/links``: the links, plus what the page needs to show them: the origin
  visitors reach us on (for the embed snippet and the share URL) and the default ring timeout;
- ``POST /v1/dashboard/links``, ``GET``/``PATCH /v1/dashboard/links/{id}``: as the API's;
- ``GET /dashboard/links/{id}/qr.svg`` and ``qr.png``: the share URL as a QR code (segno, made
  here: no third party learns the link), as a download.
"""

from __future__ import annotations

import io
from typing import Final

import segno
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from control.api import links
from control.api.dashboard import AdminAuth, AdminWrite
from control.api.deps import Id, ctx_of
from control.schemas import ErrorOut, LinkIn, LinkOut, LinkPatch

QR_SCALE: Final = 10  # pixels (PNG) or user units (SVG) per module: ~40 mm wide at 300 dpi
QR_BORDER: Final = 4  # the quiet zone the QR standard asks for, in modules

router = APIRouter(
    include_in_schema=False,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}},
)


class LinksPageOut(BaseModel):
    origin: str  # where visitors reach the platform: the snippet's script and the share URL
    default_ring_timeout: float  # what a link rings for when none is set
    links: list[LinkOut]


def origin_of(request: Request) -> str:
    """The platform's public origin (``--public-url``), else the one this request came to."""
    return ctx_of(request).settings.public_url or str(request.base_url).rstrip("/")


@router.get("/v1/dashboard/links")
async def list_links(request: Request, auth: AdminAuth) -> LinksPageOut:
    found = await links.list_links(request, auth[1].tenant_id)
    return LinksPageOut(
        origin=origin_of(request),
        default_ring_timeout=ctx_of(request).settings.ring_timeout,
        links=sorted(found, key=lambda k: (-k.created_at, k.id)),
    )


@router.post("/v1/dashboard/links", status_code=201, responses={422: {"model": ErrorOut}})
async def create_link(request: Request, body: LinkIn, auth: AdminWrite) -> LinkOut:
    return await links.create_link(request, auth[1].tenant_id, body)


@router.get("/v1/dashboard/links/{link_id}")
async def get_link(request: Request, link_id: Id, auth: AdminAuth) -> LinkOut:
    return await links.get_link(request, auth[1].tenant_id, link_id)


@router.patch("/v1/dashboard/links/{link_id}", responses={422: {"model": ErrorOut}})
async def update_link(request: Request, link_id: Id, body: LinkPatch, auth: AdminWrite) -> LinkOut:
    return await links.update_link(request, auth[1].tenant_id, link_id, body)


async def _qr(request: Request, tenant_id: str, link_id: str) -> tuple[segno.QRCode, str]:
    link = await links.get_link(request, tenant_id, link_id)
    return segno.make(origin_of(request) + link.url, error="m"), link.public_id


def _download(data: bytes, media_type: str, name: str) -> Response:
    return Response(
        data,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/dashboard/links/{link_id}/qr.svg")
async def qr_svg(request: Request, link_id: Id, auth: AdminAuth) -> Response:
    qr, public_id = await _qr(request, auth[1].tenant_id, link_id)
    out = io.BytesIO()
    qr.save(out, kind="svg", scale=QR_SCALE, border=QR_BORDER, xmldecl=True, svgns=True)
    return _download(out.getvalue(), "image/svg+xml", f"clickacall-{public_id}.svg")


@router.get("/dashboard/links/{link_id}/qr.png")
async def qr_png(request: Request, link_id: Id, auth: AdminAuth) -> Response:
    qr, public_id = await _qr(request, auth[1].tenant_id, link_id)
    out = io.BytesIO()
    qr.save(out, kind="png", scale=QR_SCALE, border=QR_BORDER)
    return _download(out.getvalue(), "image/png", f"clickacall-{public_id}.png")
