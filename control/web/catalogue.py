"""The web front's one string catalogue, as the server reads it.

The catalogue lives in ``static/i18n.js`` (the call UI and the console import it as an ES
module) and its second volume ``static/dashboard/i18n.js`` (the dashboard's ``dash.*`` strings,
which the visitor's call page need not download). In each, the block between the
``// <catalogue>`` and ``// </catalogue>`` marker lines is strict JSON, so the pages the server
renders itself (sign-in, invitation, the call page's shell and its Open Graph tags, the 404
pages) and the embed loader take their strings from the same place: one catalogue, one key
space, English and German.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Final

STATIC: Final = Path(__file__).resolve().parent / "static"
LANGS: Final = ("en", "de")
DEFAULT: Final = "en"
_START, _END = "// <catalogue>", "// </catalogue>"
VOLUMES: Final = ("i18n.js", "dashboard/i18n.js")  # under STATIC: the catalogue's two files


class CatalogueError(Exception):
    """static/i18n.js has no readable catalogue block."""


def parse(source: str) -> dict[str, dict[str, str]]:
    """The ``{lang: {key: text}}`` table in the marked block of i18n.js."""
    try:
        block = source.split(_START, 1)[1].split(_END, 1)[0]
    except IndexError:
        raise CatalogueError("i18n.js has no // <catalogue> ... // </catalogue> block") from None
    body = block.strip()
    prefix = "export const MESSAGES ="
    if not body.startswith(prefix) or not body.endswith(";"):
        raise CatalogueError("the catalogue block must be 'export const MESSAGES = {...};'")
    try:
        table = json.loads(body[len(prefix) : -1])
    except ValueError as e:
        raise CatalogueError(f"the catalogue block is not strict JSON: {e}") from None
    if not isinstance(table, dict) or set(table) != set(LANGS):
        raise CatalogueError(f"the catalogue must have exactly the languages {LANGS}")
    return table


def merge(volumes: list[dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
    """The volumes as one table; a key in two volumes is an error (one key space)."""
    out: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
    for vol in volumes:
        for lang in LANGS:
            twice = out[lang].keys() & vol[lang].keys()
            if twice:
                raise CatalogueError(f"keys in two volumes of the catalogue: {sorted(twice)}")
            out[lang].update(vol[lang])
    return out


@functools.cache
def messages() -> dict[str, dict[str, str]]:
    return merge([parse((STATIC / v).read_text(encoding="utf-8")) for v in VOLUMES])


def text(lang: str, key: str, **vars: str) -> str:
    """A message in ``lang`` (English when it lacks one) with ``{name}`` placeholders filled."""
    table = messages()
    found = table.get(lang, {}).get(key) or table[DEFAULT].get(key) or key
    for name, value in vars.items():
        found = found.replace("{" + name + "}", value)
    return found


def subset(prefix: str) -> dict[str, dict[str, str]]:
    """The messages whose keys start with ``prefix``, per language (for the embed loader)."""
    return {
        lang: {k: v for k, v in table.items() if k.startswith(prefix)}
        for lang, table in messages().items()
    }


def negotiate(query: str | None, accept_language: str | None) -> str:
    """``?lang=`` if it names one of ours, else the best of Accept-Language, else English."""
    if query:
        base = query.lower().replace("_", "-").split("-")[0]
        if base in LANGS:
            return base
    best, best_q = DEFAULT, 0.0
    for i, part in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        base = tag.strip().lower().split("-")[0]
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= i * 1e-6  # the first listed wins a tie
        if base in LANGS and q > best_q:
            best, best_q = base, q
    return best
