"""Session tokens and the TURN REST relay credentials handed out with them.

A session token lets one party (visitor or staff) act in one call for a short while::

    v1.<base64url(payload JSON)>.<base64url(HMAC-SHA256(key, "v1." + payload segment))>

with payload ``{"tid", "ten", "call", "role", "staff"?, "iat", "exp"}`` (token id, tenant,
call, role, staff id for staff tokens, issue and expiry times in Unix seconds). The token id
is also the ``<token-id>`` in the relay username, so revoking the token (a stored revocation
the relays learn about) also ends the relay allocations made with it.

:class:`TokenSigner` signs with its first key and verifies with all of them, so a new key can
be rolled out before the old one is dropped. Relay credentials follow the TURN REST
scheme and reuse the relay's own :func:`relay.auth.rest_password`, so what the control plane
issues is by construction what the relay accepts.

Nothing here does I/O or reads the clock; callers pass ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from control.ids import ID_CHARS, MAX_ID_LEN, is_id
from control.models import Role, SessionToken
from relay.auth import MAX_USERNAME, parse_rest_username, rest_password

VERSION: Final = "v1"
SIG_LEN: Final = 32  # HMAC-SHA256
MAX_TOKEN_LEN: Final = 2048  # longer is not ours: refuse before decoding anything
MIN_KEY_LEN: Final = 16

CLOCK_SKEW: Final = 30.0  # seconds a token's iat may lie in the verifier's future

# Session tokens: long enough to ring, answer and (re)connect signalling, short enough that
# a leaked one is soon worthless. Staff consoles and reconnects ask for fresh ones.
DEFAULT_TOKEN_TTL: Final = 3600
MIN_TOKEN_TTL: Final = 10
MAX_TOKEN_TTL: Final = 4 * 3600

# Relay credentials must outlive the call they carry (a TURN allocation cannot be refreshed
# with a new username), so they last "a little longer than a call needs"; revocation, not
# expiry, is what ends them early.
DEFAULT_RELAY_TTL: Final = 4 * 3600
MIN_RELAY_TTL: Final = 60
MAX_RELAY_TTL: Final = 24 * 3600

ICE_SCHEMES: Final = ("stun", "stuns", "turn", "turns")

_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9_-]+")

# TokenError reasons
MALFORMED: Final = "malformed"
BAD_SIGNATURE: Final = "bad signature"
EXPIRED: Final = "expired"
REVOKED: Final = "revoked"
NOT_YET_VALID: Final = "not yet valid"


class TokenError(Exception):
    """A token that does not authenticate; ``reason`` is one of the constants above."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_token_id() -> str:
    """A fresh random token id (also the relay username's ``<token-id>``)."""
    return uuid.uuid4().hex


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(segment: str) -> bytes:
    """Strict base64url without padding: only the alphabet, and only the canonical
    spelling (so no two token strings carry the same bytes)."""
    if not _SEGMENT_RE.fullmatch(segment) or len(segment) % 4 == 1:
        raise TokenError(MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(MALFORMED) from None
    if _b64encode(raw) != segment:
        raise TokenError(MALFORMED)
    return raw


def check_ttl(ttl: float, low: int, high: int, what: str) -> int:
    """``ttl`` as whole seconds, capped at ``high``; ValueError below ``low`` or not finite."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ValueError(f"{what} TTL must be a number of seconds")
    if ttl < low:
        raise ValueError(f"{what} TTL must be at least {low} seconds")
    return min(int(ttl), high)


def _field(payload: dict[str, Any], name: str, kind: type) -> Any:
    value = payload.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TokenError(MALFORMED)
    return value


class TokenSigner:
    """Issues and verifies session tokens. The first key signs; every key verifies."""

    __slots__ = ("_keys", "skew")

    def __init__(self, keys: Sequence[bytes], *, skew: float = CLOCK_SKEW) -> None:
        if not keys:
            raise ValueError("a token signer needs at least one key")
        if any(len(k) < MIN_KEY_LEN for k in keys):
            raise ValueError(f"token keys must be at least {MIN_KEY_LEN} bytes")
        self._keys = [bytes(k) for k in keys]
        self.skew = skew

    def _sign(self, key: bytes, body: str) -> bytes:
        return hmac.new(key, f"{VERSION}.{body}".encode(), hashlib.sha256).digest()

    def issue(
        self,
        *,
        tenant_id: str,
        call_id: str,
        role: Role,
        now: float,
        staff_id: str | None = None,
        ttl: float = DEFAULT_TOKEN_TTL,
        token_id: str | None = None,
    ) -> tuple[str, SessionToken]:
        """Sign a token for ``role`` in ``call_id``: (token string, its record to store).

        Staff tokens name their staff member; visitor tokens must not. ``ttl`` is capped at
        :data:`MAX_TOKEN_TTL`; times are whole seconds.
        """
        role = Role(role)
        if not tenant_id or not call_id:
            raise ValueError("a session token needs a tenant and a call")
        if (role is Role.STAFF) != bool(staff_id):
            raise ValueError("staff tokens need a staff id, visitor tokens must not have one")
        seconds = check_ttl(ttl, MIN_TOKEN_TTL, MAX_TOKEN_TTL, "session token")
        tid = token_id if token_id is not None else new_token_id()
        if not is_id(tid):
            raise ValueError(f"token ids are 1-{MAX_ID_LEN} characters of [{ID_CHARS}]")
        iat = int(now)
        exp = iat + seconds
        payload: dict[str, Any] = {
            "tid": tid,
            "ten": tenant_id,
            "call": call_id,
            "role": role.value,
            "iat": iat,
            "exp": exp,
        }
        if staff_id:
            payload["staff"] = staff_id
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        sig = _b64encode(self._sign(self._keys[0], body))
        record = SessionToken(
            id=tid,
            tenant_id=tenant_id,
            call_id=call_id,
            role=role,
            staff_id=staff_id,
            issued_at=float(iat),
            expires_at=float(exp),
        )
        return f"{VERSION}.{body}.{sig}", record

    def decode(self, token: str, now: float) -> SessionToken:
        """Check a token's form, signature and validity window (not revocation).

        Raises :class:`TokenError`: "malformed" (shape, encoding, fields), "bad signature"
        (no key signed it), "not yet valid" (issued more than ``skew`` seconds in the
        future) or "expired" (``now`` at or past ``exp``).
        """
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN:
            raise TokenError(MALFORMED)
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise TokenError(MALFORMED)
        _, body, sig_text = parts
        _b64decode(body)  # shape first: garbage is "malformed", not "bad signature"
        sig = _b64decode(sig_text)
        if len(sig) != SIG_LEN:
            raise TokenError(MALFORMED)
        # compare against every key (no early exit) so timing says nothing about which
        valid = False
        for key in self._keys:
            valid |= hmac.compare_digest(sig, self._sign(key, body))
        if not valid:
            raise TokenError(BAD_SIGNATURE)
        record = self._parse_payload(_b64decode(body))
        if record.issued_at > now + self.skew:
            raise TokenError(NOT_YET_VALID)
        if now >= record.expires_at:
            raise TokenError(EXPIRED)
        return record

    def verify(self, token: str, now: float, *, is_revoked: Callable[[str], bool]) -> SessionToken:
        """:meth:`decode`, then ask ``is_revoked(token_id)``: "revoked" when it says so.

        Revocation is asked last, so a forged or expired token never costs a look-up.
        """
        record = self.decode(token, now)
        if is_revoked(record.id):
            raise TokenError(REVOKED)
        return record

    @staticmethod
    def _parse_payload(raw: bytes) -> SessionToken:
        try:
            payload = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise TokenError(MALFORMED) from None
        if not isinstance(payload, dict):
            raise TokenError(MALFORMED)
        tid = _field(payload, "tid", str)
        tenant = _field(payload, "ten", str)
        call = _field(payload, "call", str)
        iat = _field(payload, "iat", int)
        exp = _field(payload, "exp", int)
        try:
            role = Role(_field(payload, "role", str))
        except ValueError:
            raise TokenError(MALFORMED) from None
        staff = payload.get("staff")
        if role is Role.STAFF:
            if not isinstance(staff, str) or not staff:
                raise TokenError(MALFORMED)
        elif staff is not None:
            raise TokenError(MALFORMED)
        if not tid or not tenant or not call or exp <= iat:
            raise TokenError(MALFORMED)
        return SessionToken(
            id=tid,
            tenant_id=tenant,
            call_id=call,
            role=role,
            staff_id=staff,
            issued_at=float(iat),
            expires_at=float(exp),
        )


def relay_ttl(requested: float | None) -> int:
    """The relay credential lifetime for a request: the default when none is asked for,
    capped at :data:`MAX_RELAY_TTL`; ValueError below :data:`MIN_RELAY_TTL` (the API turns
    that into a 400)."""
    if requested is None:
        return DEFAULT_RELAY_TTL
    return check_ttl(requested, MIN_RELAY_TTL, MAX_RELAY_TTL, "relay credential")


def relay_credentials(
    secret: bytes, token_id: str, ttl: float | None, now: float
) -> tuple[str, str]:
    """TURN REST credentials for the holder of token ``token_id``: (username, password).

    The username is ``"<unix-expiry>:<token-id>"`` with expiry ``int(now) + relay_ttl(ttl)``;
    the password is :func:`relay.auth.rest_password` of it, i.e. base64(HMAC-SHA1(secret,
    username)) — exactly what a relay holding ``secret`` computes.
    """
    if not secret:
        raise ValueError("relay credentials need the relay nodes' shared secret")
    if not is_id(token_id):
        raise ValueError(f"token ids are 1-{MAX_ID_LEN} characters of [{ID_CHARS}]")
    username = f"{int(now) + relay_ttl(ttl)}:{token_id}"
    if len(username.encode()) > MAX_USERNAME or parse_rest_username(username) is None:
        raise ValueError("relay username would not be accepted by the relay")
    return username, rest_password(secret, username)


def turn_rank(url: str) -> tuple[int, int]:
    """Where a TURN URL goes in a node's list: UDP, then TCP, then TLS (``turns:``), and
    among the TLS ones port 443 first (the one strict firewalls pass). Browsers try the
    servers' URLs in order, so a visitor whose UDP is blocked falls back by itself."""
    scheme, _, rest = url.partition(":")
    where, _, query = rest.partition("?")
    transport = dict(p.partition("=")[::2] for p in query.split("&") if p).get("transport", "")
    if scheme.lower() == "turns":
        host, sep, port = where.rpartition(":")
        if not sep or where.endswith("]"):
            port = ""
        return (2, 0 if port in ("", "443") else 1)  # no port: turns: defaults to 443
    return (1 if transport.lower() == "tcp" else 0, 0)


def ice_servers(
    urls_by_node: Mapping[str, Sequence[str]], username: str, password: str
) -> list[dict[str, Any]]:
    """RTCIceServer dicts for the chosen nodes, in the given order.

    Per node: its ``turn:``/``turns:`` URLs in one entry with ``username`` and
    ``credential``, UDP first, then TCP, then TLS with port 443 first (:func:`turn_rank`),
    its ``stun:``/``stuns:`` URLs in another without them (STUN needs none). A URL already
    listed for an earlier node is not repeated; an unknown scheme is a ValueError (a
    misregistered node, not something to hand a browser).
    """
    servers: list[dict[str, Any]] = []
    seen: set[str] = set()
    for node_id, urls in urls_by_node.items():
        turn: list[str] = []
        stun: list[str] = []
        for url in urls:
            scheme = url.partition(":")[0].lower()
            if scheme not in ICE_SCHEMES or not url.partition(":")[2]:
                raise ValueError(f"node {node_id!r} has a URL that is not STUN/TURN: {url!r}")
            if url in seen:
                continue
            seen.add(url)
            (turn if scheme.startswith("turn") else stun).append(url)
        if turn:
            turn.sort(key=turn_rank)  # stable: a node's own order within a rank stays
            servers.append({"urls": turn, "username": username, "credential": password})
        if stun:
            servers.append({"urls": stun})
    return servers


def raw_credentials(
    secret: bytes,
    tenant_id: str,
    urls_by_node: Mapping[str, Sequence[str]],
    ttl: float | None,
    now: float,
) -> tuple[SessionToken, list[dict[str, Any]]]:
    """For tenants with their own signalling: a callless token record (store it, so it can
    be revoked) and the ``iceServers`` list whose credentials carry its id."""
    seconds = relay_ttl(ttl)
    record = SessionToken(
        id=new_token_id(),
        tenant_id=tenant_id,
        call_id=None,
        role=None,
        staff_id=None,
        issued_at=float(int(now)),
        expires_at=float(int(now) + seconds),
    )
    username, password = relay_credentials(secret, record.id, seconds, now)
    return record, ice_servers(urls_by_node, username, password)
