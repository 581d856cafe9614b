"""The web front's server side in process (httpx over ASGI, no browser): security headers,
static files and their caching, the embed loader's size and strings, the pages' language and
escaping, and the page functions the session routes call."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Request

from control.app import create_app
from control.models import Link, Media, Tenant
from control.settings import ControlSettings
from control.store import Store, open_store
from control.web import pages
from control.web.catalogue import STATIC, CatalogueError, merge, messages, negotiate, parse
from control.web.headers import CSP, CSP_FRAMEABLE

EMBED_MAX_GZIP = 8 * 1024


@pytest.fixture
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Store]:
    s = await open_store(f"sqlite:///{tmp_path_factory.mktemp('web')}/web.db")
    await s.create_tenant(Tenant(id="t1", name="Acme <Bikes> & Co"))
    await s.create_link(
        Link(
            id="l1",
            public_id="acme-sales",
            tenant_id="t1",
            name='Sales "desk"',
            media=[Media.VOICE],
        )
    )
    yield s
    await s.close()


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ControlSettings(db_url="sqlite:///:memory:", token_keys=[b"k" * 24]), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://platform.test") as c:
        c.app = app  # type: ignore[attr-defined]
        yield c


async def test_security_headers_everywhere(client: httpx.AsyncClient) -> None:
    for path in ("/console", "/healthz", "/static/base.css", "/c/nope"):
        r = await client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["referrer-policy"] == "no-referrer", path
        assert r.headers["permissions-policy"].startswith("camera=(self)"), path
        assert "strict-transport-security" not in r.headers, "plain HTTP: no HSTS"
    assert (await client.get("/console")).headers["content-security-policy"] == CSP
    assert (await client.get("/console")).headers["cross-origin-opener-policy"] == "same-origin"


async def test_only_the_call_page_may_be_framed(client: httpx.AsyncClient) -> None:
    page = await client.get("/c/acme-sales")
    assert page.headers["content-security-policy"] == CSP_FRAMEABLE
    assert "frame-ancestors *" in CSP_FRAMEABLE and "frame-ancestors 'none'" in CSP
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    embedded = await client.get("/c/acme-sales?embed=1")
    assert "cross-origin-opener-policy" not in embedded.headers
    for directive in ("script-src 'self'", "style-src 'self'", "connect-src 'self'"):
        assert directive in CSP
    assert "unsafe" not in CSP


async def test_hsts_over_https(store: Store) -> None:
    app = create_app(ControlSettings(db_url="sqlite:///:memory:", token_keys=[b"k" * 24]), store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://platform.test") as c:
        r = await c.get("/console")
    assert r.headers["strict-transport-security"].startswith("max-age=")


async def test_call_page_tags_language_and_escaping(client: httpx.AsyncClient) -> None:
    r = await client.get("/c/acme-sales", headers={"accept-language": "fr;q=1, de-CH;q=0.8"})
    assert r.status_code == 200
    html = r.text
    assert '<html lang="de">' in html
    assert '<meta property="og:title" content="Acme &lt;Bikes&gt; &amp; Co anrufen">' in html
    assert '<meta property="og:description" content="Sales &#34;desk&#34;">' in html
    assert '<meta property="og:url" content="http://platform.test/c/acme-sales">' in html
    assert 'media="voice"' in html and "<noscript>" in html
    assert "<script>" not in html and "style=" not in html, "no inline script or style"
    assert re.search(r'<script type="module" src="/static/call/call.js\?v=[0-9a-f]{12}">', html)
    en = await client.get("/c/acme-sales?lang=en", headers={"accept-language": "de"})
    assert '<html lang="en">' in en.text
    assert "Call Acme &lt;Bikes&gt; &amp; Co" in en.text


async def test_unknown_link_is_a_friendly_404(client: httpx.AsyncClient) -> None:
    for path in ("/c/nope", "/c/" + "x" * 80, "/c/bad%20id"):
        r = await client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html")
        assert "This call link does not exist" in r.text


async def test_static_files_cache_and_hide_what_is_not_served(client: httpx.AsyncClient) -> None:
    r = await client.get("/static/call/machine.js", headers={"accept-encoding": "gzip"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["content-encoding"] == "gzip"
    etag = r.headers["etag"]
    again = await client.get("/static/call/machine.js", headers={"if-none-match": etag})
    assert again.status_code == 304
    version = re.search(r"/static/base.css\?v=([0-9a-f]+)", (await client.get("/console")).text)
    assert version
    css = await client.get(f"/static/base.css?v={version.group(1)}")
    assert "immutable" in css.headers["cache-control"]
    for hidden in (
        "/static/call/machine.test.js",
        "/static/i18n.test.js",
        "/static/jsconfig.json",
        "/static/embed.js",
        "/static/../pages.py",
        "/static/%2e%2e/pages.py",
        "/static/call/",
        "/static/nope.js",
    ):
        assert (await client.get(hidden)).status_code == 404, hidden


async def test_embed_loader_is_small_and_carries_its_strings(client: httpx.AsyncClient) -> None:
    r = await client.get("/embed.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert r.headers["cache-control"] == "public, max-age=300"
    body = r.content
    assert len(gzip.compress(body, 9)) <= EMBED_MAX_GZIP
    text = body.decode()
    assert "/*MESSAGES*/" not in text
    assert '"button.video":"Video call"' in text and '"button.video":"Videoanruf"' in text
    assert '"call.' not in text, "only the button's strings"
    assert "localStorage" not in text and "document.cookie" not in text


async def test_the_forms(client: httpx.AsyncClient) -> None:
    r = await client.get("/console")
    assert r.status_code == 200
    assert 'action="/console/signin"' in r.text
    assert 'type="email"' in r.text and 'type="password"' in r.text
    assert 'name="csrf"' not in r.text, "no session, no CSRF field"
    assert "set-cookie" not in r.headers
    assert r.headers["cache-control"] == "no-store"
    invite = await client.get("/console/invite/" + "a" * 32)
    assert 'action="/console/invite/' + "a" * 32 + '"' in invite.text
    assert 'name="password2"' in invite.text
    assert (await client.get("/console/invite/short")).status_code == 404


async def test_console_shell_once_signed_in(client: httpx.AsyncClient) -> None:
    async def probe(request: Request) -> str | None:
        return "csrf<&>"

    client.app.state.session_probe = probe  # type: ignore[attr-defined]
    r = await client.get("/console")
    assert "<clickacall-console" in r.text
    assert '<input type="hidden" name="csrf" value="csrf&lt;&amp;&gt;">' in r.text
    assert (await client.get("/console/signin", follow_redirects=False)).status_code == 303


def _request(query: str = "", accept: str = "") -> Request:
    headers = [(b"accept-language", accept.encode())] if accept else []
    return Request({"type": "http", "query_string": query.encode(), "headers": headers})


def test_page_functions_for_the_session_routes() -> None:
    r = pages.render_signin(
        _request(), error="Email or password is wrong", status=401, email="a@b.c"
    )
    assert r.status_code == 401
    html = r.body.decode()
    assert 'role="alert">Email or password is wrong<' in html
    assert 'value="a@b.c"' in html and 'aria-invalid="true"' in html
    throttled = pages.render_signin(_request("lang=de"), error="Zu viele Versuche", status=429)
    assert throttled.headers["retry-after"] == "20"
    assert '<html lang="de">' in throttled.body.decode()
    inv = pages.render_invite(
        _request(), "t" * 20, error="too short", status=422, field="password2"
    )
    assert inv.status_code == 422
    assert re.search(r'id="password2"[^>]*aria-invalid="true"', inv.body.decode())
    assert not re.search(r'id="password"[^>]*aria-invalid', inv.body.decode())
    assert pages.PAGES.signin is pages.render_signin


def test_language_negotiation() -> None:
    assert negotiate(None, None) == "en"
    assert negotiate("de", "en") == "de"
    assert negotiate("fr", "de-DE,de;q=0.9") == "de"
    assert negotiate(None, "fr-FR, en;q=0.5, de;q=0.7") == "de"
    assert negotiate(None, "de;q=0, en;q=0.1") == "en"
    assert negotiate(None, "xx;q=bad") == "en"


def test_catalogue() -> None:
    table = messages()
    assert set(table) == {"en", "de"} and set(table["en"]) == set(table["de"])
    # both volumes are read: the call page's strings and the dashboard's
    assert table["en"]["button.video"] == "Video call" and "dash.title" in table["de"]
    with pytest.raises(Exception, match="catalogue"):
        parse("no block here")
    one = {"en": {"a": "A"}, "de": {"a": "A"}}
    with pytest.raises(CatalogueError, match="two volumes"):
        merge([one, one])


def test_the_call_page_does_not_download_the_dashboards_strings() -> None:
    """The first volume (the call page and the console import it) holds no dashboard string;
    the dashboard's modules take the catalogue through its second volume, which adds them."""
    first = parse((STATIC / "i18n.js").read_text(encoding="utf-8"))
    assert not [k for k in first["en"] if k.startswith("dash.")]
    second = parse((STATIC / "dashboard" / "i18n.js").read_text(encoding="utf-8"))
    assert second["en"] and all(k.startswith("dash.") for k in second["en"])
    for page in (STATIC / "call").glob("*.js"):
        assert "dashboard/" not in page.read_text(encoding="utf-8"), page
    for module in (STATIC / "dashboard").glob("*.js"):
        if module.name != "i18n.js":
            assert 'from "../i18n.js"' not in module.read_text(encoding="utf-8"), module
