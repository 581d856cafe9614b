"""Which relay node a call uses and the credentials for it; what a request says of its sender.

Relay credentials are signed with the chosen node's region's secret (``--relay-secret-for``) if
it has one, else the shared one (``--relay-secret``), so a credential works only on nodes of
the region it was issued for. A region with neither is a 503 before anything is stored.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from control.api.deps import ApiError, ctx_of, now_of
from control.models import RelayNode
from control.selection import NoRelayAvailable, select_node, truncate_ip
from control.tokens import ice_servers, relay_credentials


def visitor_prefix(conn: HTTPConnection) -> str | None:
    """The sender's /24 (IPv4) or /48 (IPv6) prefix: all the control plane keeps of an address."""
    host = conn.client.host if conn.client else None
    if not host:
        return None
    try:
        return truncate_ip(host)
    except ValueError:
        return None


def ua_family(ua: str | None) -> tuple[str | None, str | None]:
    """(browser family, OS family) of a User-Agent; nothing more of it is kept."""
    if not ua:
        return None, None
    ua = ua[:512]
    browser = None
    if "Edg/" in ua or "EdgA/" in ua or "EdgiOS/" in ua:
        browser = "Edge"
    elif "Firefox/" in ua or "FxiOS/" in ua:
        browser = "Firefox"
    elif "Chrome/" in ua or "CriOS/" in ua or "Chromium/" in ua:
        browser = "Chrome"
    elif "Safari/" in ua and "Version/" in ua:
        browser = "Safari"
    system = None
    if "Windows" in ua:
        system = "Windows"
    elif "iPhone" in ua or "iPad" in ua or "iPod" in ua:
        system = "iOS"
    elif "Android" in ua:
        system = "Android"
    elif "Mac OS X" in ua or "Macintosh" in ua:
        system = "macOS"
    elif "Linux" in ua:
        system = "Linux"
    return browser, system


async def pick_node(
    conn: HTTPConnection, allowed: list[str], visitor: str | None, hint: str | None = None
) -> RelayNode:
    """A healthy node in ``allowed`` regions, nearest the visitor first; 503 if none."""
    ctx = ctx_of(conn)
    s = ctx.settings
    nodes = await ctx.db().list_nodes()
    try:
        return select_node(
            nodes,
            allowed_regions=allowed,
            visitor_region=s.region_map.region_for(visitor, hint=hint),
            now=now_of(conn),
            heartbeat_timeout=s.heartbeat_timeout,
            rng=s.rng,
            region_map=s.region_map,
        )
    except NoRelayAvailable as e:
        raise ApiError(503, "no_relay", str(e)) from None


def relay_secret(conn: HTTPConnection, region: str) -> bytes:
    """The secret that signs relay credentials for ``region``'s nodes; 503 if it has none."""
    s = ctx_of(conn).settings
    secrets_ = s.region_secrets.get(region) or s.relay_secrets
    if not secrets_:
        raise ApiError(503, "unavailable", f"no relay secret is configured for region {region}")
    return secrets_[0]


def ice_for(
    conn: HTTPConnection, node: RelayNode, token_id: str
) -> tuple[list[dict[str, Any]], float]:
    """``iceServers`` for ``node`` with a TURN REST credential naming ``token_id``, and when
    that credential expires."""
    secret = relay_secret(conn, node.region)
    username, password = relay_credentials(secret, token_id, None, now_of(conn))
    expiry = float(username.partition(":")[0])
    return ice_servers({node.id: node.urls}, username, password), expiry
