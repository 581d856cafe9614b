"""Static files of the web front: ``/static/...`` (ES modules, CSS, images) and ``/embed.js``.

Files are read once and kept in memory with their SHA-256 (the ETag) and a gzip copy for
clients that accept it; a changed file (new mtime or size) is read again. Caching:

- ``/static/PATH``: ``no-cache`` with an ETag (a module's own imports carry no version, so the
  browser revalidates: a 304 costs a few bytes); the pages link their entry points as
  ``/static/PATH?v=HASH``, and a request whose ``v`` matches the file's hash is ``immutable``
  for a year.
- ``/embed.js``: the loader businesses paste, five minutes of shared cache plus the ETag, so a
  new version reaches every site quickly. It is ``static/embed.js`` with the button's strings
  from the catalogue put in place of its ``/*MESSAGES*/null`` marker, so the loader makes no
  request of its own for them.

Only files of the kinds listed in :data:`TYPES` are served; unit tests (``*.test.js``), the
type-checker's config and dot-files never are, nor anything outside ``static/``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from control.web.catalogue import STATIC, subset

TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
}
COMPRESSIBLE: Final = (".js", ".css", ".svg", ".webmanifest")
HIDDEN: Final = re.compile(r"(^|/)\.|\.test\.js$")
YEAR: Final = "public, max-age=31536000, immutable"
EMBED_CACHE: Final = "public, max-age=300"
MARKER: Final = "/*MESSAGES*/null"

router = APIRouter(include_in_schema=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gz: bytes | None
    etag: str  # quoted, as sent
    version: str  # short hash for ?v=
    ctype: str


_cache: dict[Path, tuple[tuple[int, int], Asset]] = {}


def _make(body: bytes, suffix: str) -> Asset:
    digest = hashlib.sha256(body).hexdigest()
    gz = gzip.compress(body, 9, mtime=0) if suffix in COMPRESSIBLE else None
    if gz is not None and len(gz) >= len(body):
        gz = None
    return Asset(body, gz, f'"{digest[:32]}"', digest[:12], TYPES[suffix])


def _embed_source(raw: bytes) -> bytes:
    text = raw.decode("utf-8")
    if MARKER not in text:
        raise RuntimeError(f"static/embed.js lacks its {MARKER} marker")
    strings = json.dumps(subset("button."), ensure_ascii=False, separators=(",", ":"))
    return text.replace(MARKER, strings, 1).encode("utf-8")


def load(rel: str) -> Asset | None:
    """The asset at ``rel`` under static/ (None if it is not one we serve)."""
    if HIDDEN.search(rel):
        return None
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return None
    path = (STATIC / rel).resolve()
    if not path.is_relative_to(STATIC) or path.suffix not in TYPES:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    key = (st.st_mtime_ns, st.st_size)
    cached = _cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    raw = path.read_bytes()
    asset = _make(_embed_source(raw) if rel == "embed.js" else raw, path.suffix)
    _cache[path] = (key, asset)
    return asset


def url(rel: str) -> str:
    """``/static/REL?v=HASH`` for a page's entry points (cached for a year)."""
    asset = load(rel)
    return f"/static/{rel}" if asset is None else f"/static/{rel}?v={asset.version}"


def respond(request: Request, asset: Asset, cache: str) -> Response:
    headers = {"etag": asset.etag, "cache-control": cache, "vary": "Accept-Encoding"}
    match = request.headers.get("if-none-match", "")
    if asset.etag in (m.strip().removeprefix("W/") for m in match.split(",")):
        return Response(status_code=304, headers=headers)
    body = asset.body
    if asset.gz is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gz
        headers["content-encoding"] = "gzip"
    return Response(body, media_type=asset.ctype, headers=headers)


def _not_found() -> Response:
    return Response("not found\n", status_code=404, media_type="text/plain; charset=utf-8")


@router.get("/static/{rel:path}")
async def static(request: Request, rel: str) -> Response:
    asset = None if rel == "embed.js" else load(rel)  # one URL for the loader: /embed.js
    if asset is None:
        return _not_found()
    cache = YEAR if request.query_params.get("v") == asset.version else "no-cache"
    return respond(request, asset, cache)


@router.get("/embed.js")
async def embed(request: Request) -> Response:
    asset = load("embed.js")
    if asset is None:  # pragma: no cover (ships with the package)
        return _not_found()
    return respond(request, asset, EMBED_CACHE)
