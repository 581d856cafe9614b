"""API keys: how they look, how they are minted, stored and checked.

A key is a bearer secret shown to its owner once::

    ck_live_3f9a1c07b2d4_qV1...43 base64url characters...   (tenant API key)
    ck_op_9d01e2aa5f60_Zk8...                                (operator key)

* ``ck`` marks a Clickacall key (secret scanners can match on it);
* ``live`` / ``op`` says what the key is for: a tenant's API or the operator's;
* the 12 hex digits are the key's public id (``ck_<hex>``, what listings and logs show and what
  storage looks the key up by);
* the rest is 32 random bytes, base64url without padding.

Only SHA-256 of the whole key is stored. A key of high entropy needs no slow hash: nobody can
guess it, and SHA-256 keeps a stolen table of hashes useless. Checks compare digests in
constant time, and a malformed, unknown or revoked key is the same :class:`Unauthorized` to the
caller (the reason is for logs only), never a crash.

Nothing here does I/O or reads the clock; callers pass ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from control.models import ApiKey

TENANT_KIND: Final = "live"
OPERATOR_KIND: Final = "op"
KINDS: Final = frozenset({TENANT_KIND, OPERATOR_KIND})

ID_BYTES: Final = 6  # 12 hex digits: a public id, unique per store (the store retries on a clash)
SECRET_BYTES: Final = 32
MAX_KEY_LEN: Final = 128  # anything longer is not ours; don't hash megabytes

_KEY_RE: Final = re.compile(r"ck_(live|op)_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")

TokenBytes = Callable[[int], bytes]

# compared against when the key id is unknown, so that path costs the same hash and compare
_DUMMY_HASH: Final = hashlib.sha256(b"ck_live_000000000000_unknown").digest()


class Unauthorized(Exception):
    """The presented key does not authenticate. ``reason`` is for logs, not for the client:
    "malformed", "unknown", "wrong kind", "mismatch" or "revoked"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """The parts of a well-formed key: ``key_id`` is the public id storage looks up."""

    kind: str
    key_id: str


@dataclass(frozen=True, slots=True)
class OperatorKey:
    """An operator key as configuration keeps it: public id and SHA-256, never the secret."""

    id: str
    key_hash: bytes


def hash_key(key: str) -> bytes:
    """SHA-256 of the whole key text: the only form a key is stored in."""
    return hashlib.sha256(key.encode()).digest()


def _mint(kind: str, token_bytes: TokenBytes) -> tuple[str, str]:
    """A fresh (secret key, public id) of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}")
    hex_id = token_bytes(ID_BYTES).hex()
    body = base64.urlsafe_b64encode(token_bytes(SECRET_BYTES)).rstrip(b"=").decode()
    return f"ck_{kind}_{hex_id}_{body}", f"ck_{hex_id}"


def new_api_key(
    tenant_id: str, now: float, *, token_bytes: TokenBytes = secrets.token_bytes
) -> tuple[str, ApiKey]:
    """Mint a tenant API key: (the secret to show once, the record to store)."""
    if not tenant_id:
        raise ValueError("an API key needs a tenant")
    key, key_id = _mint(TENANT_KIND, token_bytes)
    return key, ApiKey(id=key_id, tenant_id=tenant_id, key_hash=hash_key(key), created_at=now)


def new_operator_key(*, token_bytes: TokenBytes = secrets.token_bytes) -> tuple[str, OperatorKey]:
    """Mint an operator key: (the secret to show once, the id and hash to configure)."""
    key, key_id = _mint(OPERATOR_KIND, token_bytes)
    return key, OperatorKey(id=key_id, key_hash=hash_key(key))


def parse_key(key: str) -> ParsedKey:
    """Check the key's shape and return its kind and public id; :class:`Unauthorized`
    ("malformed") for anything else, whatever its type or size."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LEN:
        raise Unauthorized("malformed")
    match = _KEY_RE.fullmatch(key)
    if match is None:
        raise Unauthorized("malformed")
    return ParsedKey(kind=match.group(1), key_id="ck_" + match.group(2))


def key_id(key: str) -> str:
    """The public id storage should look ``key`` up by (raises :class:`Unauthorized`)."""
    return parse_key(key).key_id


def bearer(header: str | None) -> str:
    """The key inside an ``Authorization: Bearer <key>`` header value (not yet checked)."""
    if not header:
        raise Unauthorized("malformed")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("malformed")
    return value.strip()


def verify_api_key(key: str, stored: ApiKey | None) -> ApiKey:
    """Decide whether ``key`` is the tenant key ``stored`` (what storage found for
    :func:`key_id`; None when nothing was). Returns ``stored`` or raises :class:`Unauthorized`.

    The unknown-id path still hashes and compares, so timing does not tell an unknown id
    from a wrong secret.
    """
    parsed = parse_key(key)
    presented = hash_key(key)
    expected = stored.key_hash if stored is not None else _DUMMY_HASH
    same = hmac.compare_digest(presented, expected)
    if stored is None:
        raise Unauthorized("unknown")
    if parsed.kind != TENANT_KIND:
        raise Unauthorized("wrong kind")
    if stored.id != parsed.key_id or not same:
        raise Unauthorized("mismatch")
    if stored.revoked_at is not None:
        raise Unauthorized("revoked")
    return stored


def verify_operator_key(key: str, configured: Iterable[OperatorKey]) -> OperatorKey:
    """Decide whether ``key`` is one of the configured operator keys (every one is compared,
    in constant time). Returns the matching one or raises :class:`Unauthorized`."""
    parsed = parse_key(key)
    presented = hash_key(key)
    found: OperatorKey | None = None
    for candidate in configured:
        if hmac.compare_digest(presented, candidate.key_hash) and candidate.id == parsed.key_id:
            found = candidate
    if parsed.kind != OPERATOR_KIND:
        raise Unauthorized("wrong kind")
    if found is None:
        raise Unauthorized("mismatch")
    return found


def revoke(key: ApiKey, now: float) -> ApiKey:
    """The key's record once revoked at ``now`` (an earlier revocation time is kept)."""
    if key.revoked_at is not None:
        return key
    return ApiKey(
        id=key.id,
        tenant_id=key.tenant_id,
        key_hash=key.key_hash,
        created_at=key.created_at,
        revoked_at=now,
    )
