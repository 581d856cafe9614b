"""The dashboard's Links section without a browser (httpx over ASGI, SQLite and PostgreSQL):
an admin creates and edits links through the API's own validation (a message naming the field,
nothing stored), another business's link is a 404 everywhere, a staff-only member is refused,
and the QR codes download as a real SVG and a real PNG whose modules are the share URL's."""

from __future__ import annotations

import struct
import zlib
from xml.etree import ElementTree

import httpx
import segno

from control.app import create_app
from control.store import Store
from tests import test_api, test_dashboard, test_store
from tests.test_api import Clock, err, make_settings
from tests.test_dashboard import BASE, ORIGIN, Env, Member, invite, signin, tenant_with_admin

store, pg, env = test_api.store, test_store.pg, test_dashboard.env

HOURS = {"timezone": "Europe/Berlin", "windows": [[0, 540, 1020], [4, 540, 780]]}


async def _link(admin: Member, **body: object) -> dict[str, object]:
    r = await admin.c.post(
        "/v1/dashboard/links", json={"name": "Front desk", **body}, headers=admin.w
    )
    assert r.status_code == 201, r.text
    out: dict[str, object] = r.json()
    return out


async def test_an_admin_creates_lists_and_edits_links(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    await invite(env, admin, "Ann", "ann@acme.test")
    (ann_id,) = [s.id for s in await env.store.list_staff(admin.tenant) if s.name == "Ann"]
    link = await _link(
        admin,
        media=["video", "voice"],
        ring_staff=[ann_id],
        hours=HOURS,
        ring_timeout=45,
        relay_only=False,
    )
    assert link["name"] == "Front desk" and link["media"] == ["video", "voice"]
    assert link["ring_staff"] == [ann_id] and link["hours"] == HOURS
    assert link["ring_timeout"] == 45 and link["relay_only"] is False
    assert link["url"] == f"/c/{link['public_id']}"
    r = await admin.c.get("/v1/dashboard/links")
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["origin"] == BASE and page["default_ring_timeout"] > 0
    assert [k["id"] for k in page["links"]] == [link["id"]]
    # the API with the tenant's key sees the same link
    r = await admin.c.get(f"/v1/links/{link['id']}", headers=admin.key)
    assert r.status_code == 200 and r.json() == link
    # edit: voice only, always open, relay only, nobody in particular
    path = f"/v1/dashboard/links/{link['id']}"
    body = {"media": ["voice"], "always_open": True, "relay_only": True, "ring_staff": []}
    r = await admin.c.patch(path, json=body, headers=admin.w)
    assert r.status_code == 200, r.text
    assert r.json()["media"] == ["voice"] and r.json()["hours"] is None
    assert r.json()["relay_only"] is True and r.json()["ring_staff"] == []
    # new opening hours in another zone
    hours = {"timezone": "America/New_York", "windows": [[5, 600, 120]]}
    r = await admin.c.patch(path, json={"hours": hours}, headers=admin.w)
    assert r.status_code == 200 and r.json()["hours"] == hours
    r = await admin.c.get(path)
    assert r.status_code == 200 and r.json()["hours"] == hours


async def test_bad_input_names_the_field_and_stores_nothing(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    other = await tenant_with_admin(env, "Other", "owner@other.test")
    (stranger,) = [s.id for s in await env.store.list_staff(other.tenant)]
    bad: list[tuple[dict[str, object], str]] = [
        ({"name": ""}, "body.name:"),
        ({"name": "x" * 201}, "body.name:"),
        ({"name": "A", "media": []}, "body.media:"),
        ({"name": "A", "media": ["fax"]}, "body.media."),
        ({"name": "A", "ring_timeout": 2}, "body.ring_timeout:"),
        ({"name": "A", "ring_timeout": 601}, "body.ring_timeout:"),
        (
            {"name": "A", "hours": {"timezone": "Mars/Olympus", "windows": []}},
            "body.hours.timezone:",
        ),
        ({"name": "A", "hours": {"windows": [[7, 0, 60]]}}, "body.hours.windows:"),
        ({"name": "A", "hours": {"windows": [[1, 540, 540]]}}, "body.hours.windows:"),
        ({"name": "A", "ring_staff": [stranger]}, "ring_staff:"),  # another business's member
        ({"name": "A", "colour": "red"}, "body.colour:"),
    ]
    for body, field in bad:
        r = await admin.c.post("/v1/dashboard/links", json=body, headers=admin.w)
        assert err(r, 422, "invalid").startswith(field), (body, r.text)
    assert await env.store.list_links(admin.tenant) == []
    # an edit refused leaves the link as it was
    link = await _link(admin, hours=HOURS)
    path = f"/v1/dashboard/links/{link['id']}"
    for body, field in bad[1:]:
        body = {k: v for k, v in body.items() if k != "name"} or {"name": "x" * 201}
        r = await admin.c.patch(path, json=body, headers=admin.w)
        assert err(r, 422, "invalid").startswith(field), (body, r.text)
    r = await admin.c.get(path)
    assert r.json() == link


async def test_links_are_the_businesss_own_and_admins_only(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    other = await tenant_with_admin(env, "Other", "owner@other.test")
    link = await _link(admin)
    theirs = await _link(other, name="Theirs")
    # another business's admin: 404 on every route, and their list holds only their own
    for path in (
        f"/v1/dashboard/links/{link['id']}",
        f"/dashboard/links/{link['id']}/qr.svg",
        f"/dashboard/links/{link['id']}/qr.png",
    ):
        r = await other.c.get(path)
        assert r.status_code == 404, (path, r.text)
    r = await other.c.patch(
        f"/v1/dashboard/links/{link['id']}", json={"name": "Mine now"}, headers=other.w
    )
    assert r.status_code == 404
    r = await other.c.get("/v1/dashboard/links")
    assert [k["id"] for k in r.json()["links"]] == [theirs["id"]]
    assert (await admin.c.get(f"/v1/dashboard/links/{link['id']}")).json()["name"] == "Front desk"
    # a staff-only member of the same business: 403; signed out: 401
    await invite(env, admin, "Ann", "ann@acme.test")
    ann = env.client()
    assert (await signin(ann, "ann@acme.test")).status_code == 303
    ann_csrf = await test_dashboard.csrf_of(ann)
    gets = (
        "/v1/dashboard/links",
        f"/v1/dashboard/links/{link['id']}",
        f"/dashboard/links/{link['id']}/qr.svg",
        f"/dashboard/links/{link['id']}/qr.png",
    )
    for path in gets:
        assert err(await ann.get(path), 403, "forbidden"), path
        assert (await env.client().get(path)).status_code == 401, path
    w = {"X-CSRF-Token": ann_csrf, **ORIGIN}
    r = await ann.post("/v1/dashboard/links", json={"name": "Sneaky"}, headers=w)
    assert err(r, 403, "forbidden")
    r = await ann.patch(f"/v1/dashboard/links/{link['id']}", json={"name": "Sneaky"}, headers=w)
    assert err(r, 403, "forbidden")
    # an admin's change without the CSRF token or from another origin is refused
    r = await admin.c.post("/v1/dashboard/links", json={"name": "X"}, headers=ORIGIN)
    assert r.status_code == 403
    bad_origin = {"X-CSRF-Token": admin.csrf, "Origin": "https://evil.test"}
    r = await admin.c.post("/v1/dashboard/links", json={"name": "X"}, headers=bad_origin)
    assert r.status_code == 403
    assert len(await env.store.list_links(admin.tenant)) == 1


def _png_modules(data: bytes) -> list[list[bool]]:
    """The dark pixels of a segno PNG (greyscale or palette, 1 bit), row by row."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, head = 8, b"", b""
    while pos < len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + size]
        crc = struct.unpack(">I", data[pos + 8 + size : pos + 12 + size])[0]
        assert zlib.crc32(kind + body) == crc
        if kind == b"IHDR":
            head = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + size
    width, height, depth = struct.unpack(">IIB", head[:9])
    assert depth == 1
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8
    rows, prev = [], bytes(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):  # undo the row's filter (1 bit per pixel: 1 byte per step)
            a, b, c = line[i - 1] if i else 0, prev[i], prev[i - 1] if i else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
            else:
                assert kind == 0
        prev = bytes(line)
        bits = [(line[x // 8] >> (7 - x % 8)) & 1 for x in range(width)]
        rows.append([b == 0 for b in bits])  # index/grey 0 is dark in segno's 1-bit output
    return rows


async def test_the_qr_code_downloads_as_svg_and_png_of_the_share_url(env: Env) -> None:
    admin = await tenant_with_admin(env, "Acme", "owner@acme.test")
    link = await _link(admin)
    share = f"{BASE}/c/{link['public_id']}"
    expected = segno.make(share, error="m")
    r = await admin.c.get(f"/dashboard/links/{link['id']}/qr.svg")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    disposition = r.headers["content-disposition"]
    assert disposition == f'attachment; filename="clickacall-{link["public_id"]}.svg"'
    root = ElementTree.fromstring(r.content)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    size = (expected.symbol_size(scale=10, border=4))[0]
    assert root.get("width") == str(size) and root.get("height") == str(size)
    r = await admin.c.get(f"/dashboard/links/{link['id']}/qr.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"].endswith(f'{link["public_id"]}.png"')
    pixels = _png_modules(r.content)
    assert len(pixels) == size and len(pixels[0]) == size
    # sample each module's centre: exactly the matrix of the share URL's QR code
    n = len(expected.matrix)
    got = [[pixels[(4 + y) * 10 + 5][(4 + x) * 10 + 5] for x in range(n)] for y in range(n)]
    assert got == [[bool(v) for v in row] for row in expected.matrix]
    # the quiet zone is light
    assert not any(pixels[0]) and not any(row[0] for row in pixels)


INNER = "http://10.0.0.7:8080"


class BehindProxy(Env):
    """The app reached on an inner address, its public origin set with ``--public-url``."""

    def client(self, base: str = INNER) -> httpx.AsyncClient:
        return super().client(base)


async def test_the_public_url_setting_makes_the_snippet_and_qr_origin(store: Store) -> None:
    clock = Clock()
    transport = httpx.ASGITransport(app=create_app(make_settings(clock, public_url=BASE), store))
    async with httpx.AsyncClient(transport=transport, base_url=INNER) as op:
        admin = await tenant_with_admin(BehindProxy(transport, clock, store, op), "A", "a@a.test")
        link = await _link(admin)
        r = await admin.c.get("/v1/dashboard/links")
        assert r.json()["origin"] == BASE
        r = await admin.c.get(f"/dashboard/links/{link['id']}/qr.png")
        expected = segno.make(f"{BASE}/c/{link['public_id']}", error="m")
        n = len(expected.matrix)
        pixels = _png_modules(r.content)
        got = [[pixels[(4 + y) * 10 + 5][(4 + x) * 10 + 5] for x in range(n)] for y in range(n)]
        assert got == [[bool(v) for v in row] for row in expected.matrix]
