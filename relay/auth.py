"""Long-term credentials (RFC 8489 section 9.2) and stateless nonces for the TURN core.

Credentials come from two places:

* TURN REST usernames ``"<unix-expiry>:<token-id>"`` whose password is
  ``base64(HMAC-SHA1(secret, username))`` for any configured secret (several secrets
  allow rotation without dropping calls). A username that is only the expiry
  (``"1796325601"``) is accepted too, as coturn does and as its ``turnutils_uclient`` sends
  when given no user; such a credential has no token id, so the per-user quota and
  revocation key on the whole username;
* static users (``--user NAME:PASSWORD``).

Nonces are stateless: ``base64url(issue-time[4] || HMAC-SHA256(key, time || client)[:8])``,
so an unauthenticated request costs the server no memory. A nonce is only valid for the
client IP address it was issued to and for ``lifetime`` seconds. Workers that share
the nonce key accept each other's nonces.

No clock is read here; callers pass ``now``. Realm and passwords are used as given (no
OpaqueString/SASLprep profile): the control plane issues ASCII credentials.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from relay.backend import Address

# PASSWORD-ALGORITHM values (RFC 8489 section 18.5)
PASSWORD_MD5: Final = 0x0001
PASSWORD_SHA256: Final = 0x0002

MAX_USERNAME: Final = 508  # bytes (RFC 8489 section 14.3: less than 509)
NONCE_MAC_LEN: Final = 8
NONCE_SKEW: Final = 5.0  # seconds a nonce may come from the future (workers' clocks differ)


class NonceStatus(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # genuine but older than the lifetime: 438
    INVALID = "invalid"  # forged, mangled, or issued to another client


class NonceMint:
    """Issues and checks stateless nonces bound to one client IP address."""

    __slots__ = ("_key", "lifetime")

    def __init__(self, key: bytes, lifetime: float) -> None:
        if len(key) < 16:
            raise ValueError("nonce key must be at least 16 bytes")
        self._key = key
        self.lifetime = lifetime

    def _mac(self, stamp: bytes, client: Address) -> bytes:
        # bound to the client's IP, not its port: one host's sockets (an ICE agent's
        # candidates, an RTP/RTCP pair) may share a nonce, as coturn's unbound nonces allow
        msg = b"%s|%s" % (stamp, client[0].encode())
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:NONCE_MAC_LEN]

    def issue(self, client: Address, now: float) -> bytes:
        stamp = struct.pack("!I", int(now) & 0xFFFFFFFF)
        return base64.urlsafe_b64encode(stamp + self._mac(stamp, client)).rstrip(b"=")

    def check(self, nonce: bytes, client: Address, now: float) -> NonceStatus:
        if len(nonce) != 16:
            return NonceStatus.INVALID
        try:
            raw = base64.urlsafe_b64decode(nonce + b"==")
        except (binascii.Error, ValueError):
            return NonceStatus.INVALID
        stamp, mac = raw[:4], raw[4:]
        if len(raw) != 4 + NONCE_MAC_LEN or not hmac.compare_digest(mac, self._mac(stamp, client)):
            return NonceStatus.INVALID
        (issued,) = struct.unpack("!I", stamp)
        if issued > now + NONCE_SKEW:
            return NonceStatus.INVALID
        if now - issued > self.lifetime:
            return NonceStatus.STALE
        return NonceStatus.VALID


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a username names: ``quota_key`` groups allocations for the per-user quota
    (the token id for REST usernames), ``expiry`` is the REST expiry (None: static)."""

    username: str
    quota_key: str
    expiry: int | None

    @property
    def token_id(self) -> str | None:
        """What revocation matches for a TURN REST username: its token id, or the whole
        username when it is only the expiry; None for a static user."""
        return self.quota_key[5:] if self.expiry is not None else None

    @property
    def issued_token(self) -> str | None:
        """The control plane's token id when the username carries one (summaries are keyed
        by it): None for an expiry-only username and for a static user."""
        return self.token_id if self.expiry is not None and ":" in self.username else None


def rest_password(secret: bytes, username: str) -> str:
    """The TURN REST password for ``username``: base64(HMAC-SHA1(secret, username))."""
    digest = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def long_term_key(username: str, realm: str, password: str, algorithm: int = PASSWORD_MD5) -> bytes:
    """RFC 8489 section 9.2.2: H(username ":" realm ":" password), H = MD5 or SHA-256."""
    material = f"{username}:{realm}:{password}".encode()
    if algorithm == PASSWORD_SHA256:
        return hashlib.sha256(material).digest()
    return hashlib.md5(material, usedforsecurity=False).digest()


def parse_rest_username(username: str) -> tuple[int, str] | None:
    """``"<unix-expiry>:<token-id>"`` -> (expiry, token id), or None for anything else."""
    expiry, sep, token = username.partition(":")
    if not sep or not token or not _is_expiry(expiry):
        return None
    return int(expiry), token


def _is_expiry(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 12


def parse_rest_expiry(username: str) -> int | None:
    """An expiry-only TURN REST username (``"<unix-expiry>"``, coturn's form without a
    user) -> the expiry, else None."""
    return int(username) if _is_expiry(username) else None


class Credentials:
    """Finds the candidate passwords for a username (static users first, then REST)."""

    __slots__ = ("realm", "secrets", "static_users")

    def __init__(
        self, realm: str, secrets: Sequence[bytes], static_users: Mapping[str, str]
    ) -> None:
        self.realm = realm
        self.secrets = list(secrets)
        self.static_users = dict(static_users)

    def lookup(self, username: str) -> tuple[Identity, list[str]] | None:
        """(identity, candidate passwords) or None when the username can't be ours."""
        if not username or len(username.encode()) > MAX_USERNAME:
            return None
        password = self.static_users.get(username)
        if password is not None:
            return Identity(username, "user:" + username, None), [password]
        if not self.secrets:
            return None
        parsed = parse_rest_username(username)
        if parsed is None:
            only = parse_rest_expiry(username)
            if only is None:
                return None
            parsed = (only, username)  # no token id: the whole username stands for it
        expiry, token = parsed
        passwords = [rest_password(s, username) for s in self.secrets]
        return Identity(username, "rest:" + token, expiry), passwords

    def keys(self, username: str, passwords: Sequence[str], algorithm: int) -> list[bytes]:
        return [long_term_key(username, self.realm, p, algorithm) for p in passwords]
