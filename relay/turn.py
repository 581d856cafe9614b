"""The sans-I/O TURN core: RFC 8656 (over UDP, TCP or TLS: the caller frames streams), RFC 8489
STUN, RFC 6156 IPv6 and RFC 8656's dual allocations (one IPv4 and one IPv6 relayed address).

:class:`TurnServer` turns ``(datagram, listener, client, now, wall)`` into the datagrams to send
back, and asks a :class:`~relay.backend.Backend` to open relayed sockets and to write the fast
path's permission and channel tables. It has no sockets, no event loop and never reads the
clock: the caller passes ``now``, a monotonic clock (CLOCK_MONOTONIC) that every lifetime,
nonce and rate limit is measured on, so a wall clock stepped by NTP or an operator neither
ends allocations early nor keeps them past their time; and ``wall``, Unix time, which only
REST username expiries and remembered revocations are compared with (it defaults to ``now``,
as the tests' single fake clock does). It calls :meth:`TurnServer.sweep` about once a second.

Unauthenticated traffic (Binding, the 401/438 challenges, errors to requests that never
authenticated) is rate-limited per client prefix and its answers are kept small, so the relay
is a poor reflector: see :attr:`TurnConfig.unauth_amplification`.
"""

from __future__ import annotations

import itertools
import logging
import socket
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ext import _stun as stun
from relay.auth import (
    PASSWORD_MD5,
    PASSWORD_SHA256,
    Credentials,
    Identity,
    NonceMint,
    NonceStatus,
)
from relay.backend import Address, Backend, Relayed
from relay.config import DEFAULTS as NODE
from relay.policy import PeerPolicy, RateLimiter, redact
from relay.quota import LocalQuota, Quota
from relay.revocations import REVOCATION_MEMORY, ExpiringSet

LOGGER_NAME: Final = "clickacall.relay.turn"
UDP: Final = 17
CHANNEL_MIN: Final = 0x4000
CHANNEL_MAX: Final = (
    0x7FFF  # RFC 8656 says 0x4FFF; RFC 5766 clients (coturn tools) use up to 0x7FFF
)

Datagrams = list[tuple[bytes, Address]]

# RFC 6062 TCP allocations (REQUESTED-TRANSPORT=TCP) are not served: the answer says so.
TCP_ALLOCATION_REASON: Final = (
    "Unsupported Transport Protocol: only UDP is relayed (RFC 6062 TCP allocations are not served)"
)

# coturn (4.x) and its turnutils_uclient -Z still number these two as the draft did; a
# request naming its ADDITIONAL-ADDRESS-FAMILY that way gets its ADDRESS-ERROR-CODE that way.
MULTIPLEX_PORT_REASON: Final = (
    "Bad Request: EVEN-PORT with the R bit and RESERVATION-TOKEN are not served with "
    "--multiplex-peer (allocations share one relayed address)"
)
# 403, not 400: the ChannelBind is well formed, the relay's mode forbids it (RFC 8656 12.2:
# 403 when the request is valid but cannot be performed due to administrative restrictions)
PEER_TAKEN_REASON: Final = (
    "Forbidden: this peer address and port belong to another allocation (--multiplex-peer)"
)

COTURN_ADDITIONAL_ADDRESS_FAMILY: Final = 0x8032
COTURN_ADDRESS_ERROR_CODE: Final = 0x8033

REASONS: Final[dict[int, str]] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    508: "Insufficient Capacity",
}

METHOD_NAMES: Final[dict[int, str]] = {
    stun.BINDING: "binding",
    stun.ALLOCATE: "allocate",
    stun.REFRESH: "refresh",
    stun.CREATE_PERMISSION: "create_permission",
    stun.CHANNEL_BIND: "channel_bind",
    stun.SEND: "send",
}

_AUTH_ATTRS: Final = frozenset(
    {
        stun.USERNAME,
        stun.REALM,
        stun.NONCE,
        stun.MESSAGE_INTEGRITY,
        stun.MESSAGE_INTEGRITY_SHA256,
        stun.PASSWORD_ALGORITHM,
    }
)
# The comprehension-required attributes we understand, per request method (RFC 8489 6.3).
KNOWN_ATTRS: Final[dict[int, frozenset[int]]] = {
    stun.BINDING: _AUTH_ATTRS | {stun.PRIORITY, stun.USE_CANDIDATE},
    stun.ALLOCATE: _AUTH_ATTRS
    | {
        stun.REQUESTED_TRANSPORT,
        stun.REQUESTED_ADDRESS_FAMILY,
        stun.EVEN_PORT,
        stun.DONT_FRAGMENT,
        stun.RESERVATION_TOKEN,
        stun.LIFETIME,
    },
    stun.REFRESH: _AUTH_ATTRS | {stun.LIFETIME, stun.REQUESTED_ADDRESS_FAMILY},
    stun.CREATE_PERMISSION: _AUTH_ATTRS | {stun.XOR_PEER_ADDRESS},
    stun.CHANNEL_BIND: _AUTH_ATTRS | {stun.CHANNEL_NUMBER, stun.XOR_PEER_ADDRESS},
    stun.SEND: frozenset({stun.XOR_PEER_ADDRESS, stun.DATA_ATTR, stun.DONT_FRAGMENT}),
}

_SOCKET_FAMILY: Final = {stun.FAMILY_IPV4: socket.AF_INET, stun.FAMILY_IPV6: socket.AF_INET6}


@dataclass(slots=True)
class TurnConfig:
    """What the TURN core needs to know; the CLI/config layer fills it in."""

    realm: str = NODE.realm
    auth_secrets: list[bytes] = field(default_factory=list)  # TURN REST secrets (rotation)
    static_users: dict[str, str] = field(default_factory=dict)  # name -> password
    software: str = NODE.software
    default_lifetime: int = 600  # allocation, seconds
    max_lifetime: int = 3600
    permission_lifetime: int = 300
    channel_lifetime: int = 600
    channel_cooldown: int = 300  # an expired channel/peer can't be rebound elsewhere meanwhile
    reservation_lifetime: int = 30  # EVEN-PORT R-bit port holds
    max_allocations_total: int = NODE.max_allocations  # 0: no cap
    max_allocations_per_user: int = NODE.user_quota  # per REST token id / static user; 0: none
    max_permissions: int = 1000  # per allocation (permissions are keyed by peer IP)
    bandwidth_bytes_per_second: int = NODE.bandwidth  # per allocation and direction; 0: none
    policy: PeerPolicy = field(default_factory=PeerPolicy)
    nonce_lifetime: float = 600.0
    unauth_rate: float = NODE.unauth_rate  # unauthenticated requests/s per /24 or /48; 0: off
    unauth_burst: float = NODE.unauth_burst
    rate_table_size: int = 65536  # prefixes remembered by the limiter (LRU)
    # An unauthenticated error (401, 438, 400, 420) carries only the attributes the RFC
    # requires; its reason phrase goes when the answer would be larger than the request, and
    # it is sent only when no larger than ``unauth_amplification`` x the request.
    # 1.0 never answers with more bytes than came in, but a 401 (REALM + NONCE) can't fit in a
    # 28-36 byte first Allocate, which is what browsers and aioice send: they would get no
    # answer. 3.0 serves them (about 2x for a short realm) while keeping reflection small.
    unauth_amplification: float = 3.0
    relay_ip4: str | None = "0.0.0.0"  # None: no IPv4 relaying (440 for IPv4)
    relay_ip6: str | None = None  # None: no IPv6 relaying (440 for IPv6)
    alternate_server: Address | None = None  # where drained Allocates are sent (300)
    log_full_ips: bool = False  # operators' opt-in: otherwise only /24 or /48 is logged
    # --multiplex-peer: allocations share one relayed address (the backend's shared socket),
    # so EVEN-PORT and RESERVATION-TOKEN cannot be honoured (400) and a peer IP:port belongs
    # to one allocation at a time (Backend.claim_peer)
    multiplex_peer: bool = False
    # How long a revoked token id is refused when no allocation told us its username's
    # expiry: no credential the control plane issues lives longer.
    revocation_memory: float = REVOCATION_MEMORY


@dataclass(slots=True, eq=False)
class Allocation:
    """One allocation, keyed by its 5-tuple (listener index, client address). A dual
    allocation (ADDITIONAL-ADDRESS-FAMILY) has an IPv6 relayed address besides its IPv4 one;
    each peer is reached from the one of its family."""

    id: str
    listener: int
    client: Address
    identity: Identity
    relayed: Relayed
    family: int  # stun.FAMILY_IPV4 / FAMILY_IPV6: of ``relayed``
    expires: float
    transaction_id: bytes  # of the Allocate that made it (retransmissions get ``response``)
    response: bytes
    log: logging.LoggerAdapter[logging.Logger]
    permissions: dict[str, float] = field(default_factory=dict)  # peer IP -> expiry
    channels: dict[int, tuple[Address, float]] = field(default_factory=dict)  # -> peer, expiry
    peers: dict[Address, int] = field(default_factory=dict)  # peer -> channel
    cooldown: dict[int, tuple[Address, float]] = field(default_factory=dict)  # expired channels
    next_check: float = 0.0  # no expiry is due before this
    extra: Relayed | None = None  # a dual allocation's IPv6 relayed address

    @property
    def handle(self) -> int:
        return self.relayed.handle

    @property
    def families(self) -> tuple[int, ...]:
        return (self.family,) if self.extra is None else (self.family, stun.FAMILY_IPV6)

    @property
    def handles(self) -> tuple[int, ...]:
        if self.extra is None:
            return (self.relayed.handle,)
        return (self.relayed.handle, self.extra.handle)

    def handle_for(self, host: str) -> int:
        """The handle of the relayed address a peer at ``host`` is reached from."""
        if self.extra is not None and ":" in host:
            return self.extra.handle
        return self.relayed.handle

    def due(self, when: float) -> None:
        if when < self.next_check:
            self.next_check = when


@dataclass(slots=True)
class _Request:
    msg: stun.Message
    data: bytes
    listener: int
    client: Address
    now: float  # monotonic: lifetimes, nonces, rate limits
    name: str  # method name for stats
    wall: float = 0.0  # Unix time: REST username expiries


@dataclass(slots=True)
class _Auth:
    identity: Identity
    key: bytes
    sha256: bool


def _u32(value: bytes | None) -> int | None:
    return struct.unpack("!I", value)[0] if value is not None and len(value) == 4 else None


def _plain_host(host: str) -> str:
    """``::ffff:a.b.c.d`` (a dual-stack socket's view of an IPv4 client) -> ``a.b.c.d``."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


class _Refuse(Exception):
    """Raised inside a request handler to answer with an error (and an optional stat)."""

    def __init__(
        self,
        code: int,
        stat: str | None = None,
        attrs: list[tuple[int, bytes]] | None = None,
        reason: str | None = None,
    ):
        super().__init__(code)
        self.code = code
        self.stat = stat
        self.attrs = attrs or []
        self.reason = reason  # instead of REASONS[code]


class TurnServer:
    """The TURN state machine for one worker. Not thread-safe; one event loop drives it."""

    def __init__(
        self,
        config: TurnConfig,
        backend: Backend,
        *,
        nonce_key: bytes,
        log: logging.LoggerAdapter[Any] | logging.Logger | None = None,
        quota: Quota | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.stats: Counter[str] = Counter()
        self.draining = False
        self._credentials = Credentials(config.realm, config.auth_secrets, config.static_users)
        self._nonces = NonceMint(nonce_key, config.nonce_lifetime)
        self._limiter = RateLimiter(config.unauth_rate, config.unauth_burst, config.rate_table_size)
        self._allocations: dict[tuple[int, Address], Allocation] = {}
        # allocations and held EVEN-PORT reservations per credential, node-wide with several
        # workers (relay/quota.py)
        self._quota: Quota = quota if quota is not None else LocalQuota()
        # token -> (family, expiry, quota key of the credential that holds it)
        self._reservations: dict[bytes, tuple[int, float, str]] = {}
        self._revoked = ExpiringSet()  # revoked REST token ids, until no username can be valid
        self._ids = itertools.count(1)
        self._software = config.software.encode()
        self._realm = config.realm.encode()
        self._extra: dict[str, object] = {}
        if log is None:
            self._logger = logging.getLogger(LOGGER_NAME)
        elif isinstance(log, logging.LoggerAdapter):
            self._logger = log.logger
            self._extra = dict(log.extra or {})
        else:
            self._logger = log
        self.log = self._adapter("-")

    # ------------------------------------------------------------------ public

    @property
    def allocation_count(self) -> int:
        return len(self._allocations)

    @property
    def allocations(self) -> Mapping[tuple[int, Address], Allocation]:
        """Live allocations by 5-tuple (read-only view, for the node agent's summaries)."""
        return self._allocations

    @property
    def revoked_count(self) -> int:
        """Revoked token ids still remembered (refused at Allocate)."""
        return len(self._revoked)

    def revoke(self, token_ids: Iterable[str], now: float) -> int:
        """The control plane revoked ``token_ids``: delete every allocation whose TURN REST
        username ``"<expiry>:<token-id>"`` carries one of them (its relayed socket and table
        entries go, as on expiry) and refuse new Allocates with such a username (401, as for
        an expired credential). Returns how many allocations were deleted.

        Revoking an id again is harmless. An id is remembered for ``revocation_memory``
        seconds from ``now`` (Unix time, as username expiries are), or until the latest username expiry seen among its
        allocations if that is later; after that no username of the token can be valid.
        """
        until = now + self.config.revocation_memory
        ids = {t for t in token_ids if t}
        for token_id in ids:
            self._revoked.add(token_id, until)
        if not ids:
            return 0
        deleted = 0
        for alloc in list(self._allocations.values()):
            revoked = alloc.identity.token_id
            if revoked is None or revoked not in ids:
                continue
            if alloc.identity.expiry is not None:
                self._revoked.add(revoked, float(alloc.identity.expiry))
            self.stats["revoked.allocation"] += 1
            self._delete(alloc, "revoked")
            deleted += 1
        return deleted

    def start_drain(self) -> None:
        """Refuse new allocations (300 to the alternate server, else 508); keep the rest."""
        if not self.draining:
            self.draining = True
            self.log.info("draining: %d allocations remain", len(self._allocations))

    def handle(
        self, data: bytes, listener: int, client: Address, now: float, wall: float | None = None
    ) -> Datagrams:
        """One STUN datagram from ``client`` on listener ``listener``; returns the replies.
        ``now`` is the monotonic clock, ``wall`` Unix time (default: ``now``)."""
        client = (client[0], client[1])
        try:
            msg = stun.parse(data)
        except ValueError:
            self.stats["malformed"] += 1
            return []
        try:
            if msg.cls == stun.REQUEST:
                wall = now if wall is None else wall
                return self._request(_Request(msg, data, listener, client, now, "?", wall))
            if msg.cls == stun.INDICATION and msg.method == stun.SEND:
                self._send_indication(msg, listener, client, now)
            else:
                self.stats["drop.unexpected"] += 1
        except Exception:  # a bug must not take the worker down; count it, log a few
            self.stats["internal_error"] += 1
            if self.stats["internal_error"] <= 10:
                self.log.exception("internal error handling method 0x%03x", msg.method)
        return []

    def connection_closed(self, listener: int, client: Address, now: float) -> bool:
        """The TCP or TLS connection that is the 5-tuple ``(listener, client)`` closed:
        its allocation, if any, can no longer reach its client and is deleted (its relayed
        socket and table entries go, as on expiry). Returns whether there was one."""
        alloc = self._allocations.get((listener, (client[0], client[1])))
        if alloc is None:
            return False
        self.stats["deleted.connection_closed"] += 1
        self._delete(alloc, "deleted: its connection closed")
        return True

    def sweep(self, now: float, wall: float | None = None) -> None:
        """Expire allocations, permissions, channels, channel cool-downs and reservations
        (on the monotonic ``now``) and remembered revocations (on ``wall``, Unix time;
        default ``now``)."""
        self._revoked.forget(now if wall is None else wall)
        for alloc in list(self._allocations.values()):
            if alloc.next_check > now:
                continue
            if alloc.expires <= now:
                self.stats["expired.allocation"] += 1
                self._delete(alloc, "expired")
                continue
            self._sweep_allocation(alloc, now)
        for token, (_family, expires, key) in list(self._reservations.items()):
            if expires <= now:
                del self._reservations[token]
                self._quota.give(key, 1)
                self.stats["expired.reservation"] += 1
                self.backend.release_reservation(token)

    # ------------------------------------------------------------------ plumbing

    def _adapter(self, alloc_id: str) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(self._logger, {**self._extra, "alloc": alloc_id})

    def _show(self, host: str) -> str:
        return host if self.config.log_full_ips else redact(host)

    def _encode(
        self,
        rq: _Request,
        attrs: list[tuple[int, bytes]],
        auth: _Auth | None,
        code: int = 0,
        reason: str | None = None,
    ) -> bytes:
        out: list[tuple[int, bytes]] = []
        if code:
            out.append((stun.ERROR_CODE, stun.encode_error_code(code, reason or REASONS[code])))
        out.extend(attrs)
        out.append((stun.SOFTWARE, self._software))
        cls = stun.ERROR if code else stun.SUCCESS
        if auth is None:
            return stun.encode(rq.msg.method, cls, rq.msg.transaction_id, out)
        return stun.encode(
            rq.msg.method, cls, rq.msg.transaction_id, out, auth.key, sha256=auth.sha256
        )

    def _reply(
        self,
        rq: _Request,
        attrs: list[tuple[int, bytes]],
        auth: _Auth | None,
        code: int = 0,
        reason: str | None = None,
    ) -> Datagrams:
        self.stats[f"{rq.name}.{code or 'ok'}"] += 1
        return [(self._encode(rq, attrs, auth, code, reason), rq.client)]

    def _unauth_error(
        self, rq: _Request, code: int, attrs: list[tuple[int, bytes]] | None = None
    ) -> Datagrams:
        """An error to a request that did not authenticate: rate-limited per client prefix
        and size-capped. It carries only what RFC 8489 requires (ERROR-CODE, and REALM and
        NONCE for 401/438, UNKNOWN-ATTRIBUTES for 420): no SOFTWARE, and FINGERPRINT only
        when the request had one. The reason phrase goes when the answer would be larger
        than the request."""
        if not self._limiter.allow(rq.client[0], rq.now):
            self.stats["rate_limited"] += 1
            return []
        attrs = attrs or []
        limit = len(rq.data)
        method, txid = rq.msg.method, rq.msg.transaction_id
        fingerprint = rq.msg.fingerprint_offset >= 0
        answer = b""
        for reason in (REASONS[code], ""):
            out = [(stun.ERROR_CODE, stun.encode_error_code(code, reason)), *attrs]
            answer = stun.encode(method, stun.ERROR, txid, out, fingerprint=fingerprint)
            if len(answer) <= limit:
                break
        if len(answer) > limit * self.config.unauth_amplification:
            self.stats["drop.amplification"] += 1
            return []
        self.stats[f"{rq.name}.{code}"] += 1
        return [(answer, rq.client)]

    def _challenge(self, rq: _Request, code: int, stat: str) -> Datagrams:
        """401 / 438 with REALM and a fresh NONCE."""
        self.stats[stat] += 1
        nonce = self._nonces.issue(rq.client, rq.now)
        return self._unauth_error(rq, code, [(stun.REALM, self._realm), (stun.NONCE, nonce)])

    def _lookup(self, listener: int, client: Address, now: float) -> Allocation | None:
        alloc = self._allocations.get((listener, client))
        if alloc is not None and alloc.expires <= now:  # expired, sweep not run yet
            self.stats["expired.allocation"] += 1
            self._delete(alloc, "expired")
            return None
        return alloc

    def _delete(self, alloc: Allocation, why: str) -> None:
        del self._allocations[(alloc.listener, alloc.client)]
        self._quota.give(alloc.identity.quota_key, 1)
        for handle in alloc.handles:
            self.backend.close_relay(handle)
        alloc.log.info("allocation %s (%s)", why, alloc.relayed.address[1])

    def _sweep_allocation(self, alloc: Allocation, now: float) -> None:
        nxt = alloc.expires
        for ip, expires in list(alloc.permissions.items()):
            if expires <= now:
                del alloc.permissions[ip]
                self.stats["expired.permission"] += 1
                self.backend.remove_permission(alloc.handle_for(ip), ip)
            else:
                nxt = min(nxt, expires)
        for ch, (peer, expires) in list(alloc.channels.items()):
            if expires <= now:
                del alloc.channels[ch]
                alloc.peers.pop(peer, None)
                self.stats["expired.channel"] += 1
                self.backend.unbind_channel(alloc.handle_for(peer[0]), ch, peer)
                alloc.cooldown[ch] = (peer, now + self.config.channel_cooldown)
                nxt = min(nxt, now + self.config.channel_cooldown)
            else:
                nxt = min(nxt, expires)
        for ch, (_peer, until) in list(alloc.cooldown.items()):
            if until <= now:
                del alloc.cooldown[ch]
            else:
                nxt = min(nxt, until)
        alloc.next_check = nxt

    # ------------------------------------------------------------------ requests

    def _request(self, rq: _Request) -> Datagrams:
        method = rq.msg.method
        rq.name = METHOD_NAMES.get(method, "unknown")
        if method == stun.BINDING:
            return self._binding(rq)
        if method not in KNOWN_ATTRS or method == stun.SEND:
            return self._unauth_error(rq, 400)
        auth = self._authenticate(rq)
        if not isinstance(auth, _Auth):
            return auth
        unknown = stun.unknown_required(rq.msg, KNOWN_ATTRS[method])
        if unknown:
            value = b"".join(struct.pack("!H", t) for t in unknown)
            return self._reply(rq, [(stun.UNKNOWN_ATTRIBUTES, value)], auth, 420)
        try:
            if method == stun.ALLOCATE:
                return self._allocate(rq, auth)
            alloc = self._lookup(rq.listener, rq.client, rq.now)
            if alloc is None:
                raise _Refuse(437, "refused.no_allocation")
            if alloc.identity.username != auth.identity.username:
                raise _Refuse(441, "refused.wrong_credentials")
            if method == stun.REFRESH:
                return self._refresh(rq, auth, alloc)
            if method == stun.CREATE_PERMISSION:
                return self._create_permission(rq, auth, alloc)
            return self._channel_bind(rq, auth, alloc)
        except _Refuse as refusal:
            if refusal.stat:
                self.stats[refusal.stat] += 1
            return self._reply(rq, refusal.attrs, auth, refusal.code, refusal.reason)

    def _binding(self, rq: _Request) -> Datagrams:
        unknown = stun.unknown_required(rq.msg, KNOWN_ATTRS[stun.BINDING])
        if unknown:
            value = b"".join(struct.pack("!H", t) for t in unknown)
            return self._unauth_error(rq, 420, [(stun.UNKNOWN_ATTRIBUTES, value)])
        if not self._limiter.allow(rq.client[0], rq.now):
            self.stats["rate_limited"] += 1
            return []
        # XOR-MAPPED-ADDRESS alone (12 bytes for IPv4, 24 for IPv6) and FINGERPRINT only
        # when asked: the answer is never more than the request plus 24 bytes
        host, port = _plain_host(rq.client[0]), rq.client[1]
        txid = rq.msg.transaction_id
        mapped = [(stun.XOR_MAPPED_ADDRESS, stun.encode_xor_address(host, port, txid))]
        fingerprint = rq.msg.fingerprint_offset >= 0
        self.stats["binding.ok"] += 1
        answer = stun.encode(stun.BINDING, stun.SUCCESS, txid, mapped, fingerprint=fingerprint)
        return [(answer, rq.client)]

    def _authenticate(self, rq: _Request) -> _Auth | Datagrams:
        """RFC 8489 9.2.4, in its order. Returns the verified key or the answer to send."""
        msg = rq.msg
        if msg.integrity_offset < 0 and msg.integrity256_offset < 0:
            return self._challenge(rq, 401, "auth.challenge")
        raw_user, realm, nonce = msg.get(stun.USERNAME), msg.get(stun.REALM), msg.get(stun.NONCE)
        if raw_user is None or realm is None or nonce is None:
            self.stats["auth.incomplete"] += 1
            return self._unauth_error(rq, 400)
        status = self._nonces.check(nonce, rq.client, rq.now)
        if status is NonceStatus.STALE:
            return self._challenge(rq, 438, "auth.stale_nonce")
        if status is not NonceStatus.VALID:
            return self._challenge(rq, 438, "auth.bad_nonce")
        try:
            username = raw_user.decode()
        except UnicodeDecodeError:
            return self._challenge(rq, 401, "auth.unknown_user")
        found = self._credentials.lookup(username)
        if found is None:
            return self._challenge(rq, 401, "auth.unknown_user")
        identity, passwords = found
        if identity.expiry is not None and identity.expiry < rq.wall:
            # Checked on every request, not only at Allocate: an expired credential neither
            # makes an allocation nor keeps one alive (Refresh, CreatePermission and
            # ChannelBind are refused, so the allocation ends at its lifetime). The answer is
            # 401 with a fresh nonce, what coturn sends whenever it looks up an expired REST
            # username and what RFC 8489 9.2.4 prescribes for credentials that are no longer
            # valid; 437 means "no such allocation" and 441 "not the allocation's
            # credentials", neither of which is true here. A client that wants to go on
            # needs new credentials and a new allocation (ICE restart), since an allocation
            # is bound to the username it was made with (441 for any other).
            stat = "auth.expired" if msg.method == stun.ALLOCATE else "auth.expired_allocation"
            return self._challenge(rq, 401, stat)
        if realm != self._realm:
            return self._challenge(rq, 401, "auth.wrong_realm")
        sha256 = msg.integrity256_offset >= 0
        algorithm = msg.get(stun.PASSWORD_ALGORITHM)
        if algorithm is not None:
            value = struct.unpack("!H", algorithm[:2])[0] if len(algorithm) >= 4 else 0
            if value not in (PASSWORD_MD5, PASSWORD_SHA256):
                self.stats["auth.bad_algorithm"] += 1
                return self._unauth_error(rq, 400)
            algorithms = [value]
        elif sha256:
            # RFC 8489 ties the key's hash to PASSWORD-ALGORITHM (MD5 by default); some
            # clients use SHA-256 keys with MESSAGE-INTEGRITY-SHA256 alone: accept both.
            algorithms = [PASSWORD_SHA256, PASSWORD_MD5]
        else:
            algorithms = [PASSWORD_MD5]
        for alg in algorithms:
            for key in self._credentials.keys(username, passwords, alg):
                if stun.check_integrity(rq.data, msg, key):
                    if msg.method == stun.ALLOCATE and identity.token_id in self._revoked:
                        # RFC 8489 9.2.4: credentials no longer valid get 401, as an expired
                        # REST username does (441 is for non-Allocate requests whose
                        # credentials differ from the allocation's). Checked only once the
                        # integrity is good, so strangers cannot probe which ids are revoked.
                        # Other requests need the allocation, which revoke() deleted: 437.
                        return self._challenge(rq, 401, "auth.revoked")
                    return _Auth(identity, key, sha256)
        return self._challenge(rq, 401, "auth.bad_integrity")

    def _allocate(self, rq: _Request, auth: _Auth) -> Datagrams:
        msg, cfg, now = rq.msg, self.config, rq.now
        alloc = self._lookup(rq.listener, rq.client, now)
        if alloc is not None:
            if alloc.transaction_id == msg.transaction_id:
                self.stats["allocate.retransmit"] += 1
                return [(alloc.response, rq.client)]
            raise _Refuse(437, "refused.allocation_exists")
        transport = msg.get(stun.REQUESTED_TRANSPORT)
        if transport is None or len(transport) != 4:
            raise _Refuse(400)
        if transport[0] != UDP:
            raise _Refuse(442, "refused.transport", reason=TCP_ALLOCATION_REASON)
        even = msg.get(stun.EVEN_PORT)
        token = msg.get(stun.RESERVATION_TOKEN)
        requested = msg.get(stun.REQUESTED_ADDRESS_FAMILY)
        additional = msg.get(stun.ADDITIONAL_ADDRESS_FAMILY)
        error_attr = stun.ADDRESS_ERROR_CODE
        if additional is None:
            additional = msg.get(COTURN_ADDITIONAL_ADDRESS_FAMILY)
            error_attr = COTURN_ADDRESS_ERROR_CODE
        lifetime_attr = msg.get(stun.LIFETIME)
        if cfg.multiplex_peer and (token is not None or (even is not None and even[:1] != b"\x00")):
            # every allocation's relayed address is the shared socket's: there is no next
            # port to hold for it, nor a held one to claim (a bad request in this mode). A
            # plain EVEN-PORT (R bit clear, as coturn's uclient sends at random) is served:
            # the shared socket's port is even.
            raise _Refuse(400, "refused.multiplex_port", reason=MULTIPLEX_PORT_REASON)
        if token is not None and (
            even is not None or requested is not None or additional is not None
        ):
            raise _Refuse(400)
        if even is not None and additional is not None and even[:1] != b"\x00":
            raise _Refuse(400)  # as coturn: no reserved pair for two families (an even port
            # alone is fine: the IPv4 half gets it; coturn's own client -Z asks for one)
        if requested is not None and additional is not None:
            raise _Refuse(400)
        if (
            (even is not None and len(even) != 1)
            or (token is not None and len(token) != 8)
            or (requested is not None and len(requested) != 4)
            or (additional is not None and (len(additional) != 4 or additional[0] != 2))
            or (lifetime_attr is not None and len(lifetime_attr) != 4)
        ):
            raise _Refuse(400)
        held: tuple[int, float, str] | None = None
        if token is not None:
            held = self._reservations.get(token)
            if held is None or held[1] <= now:
                raise _Refuse(508, "refused.bad_reservation")
            family = held[0]
        elif requested is not None:
            family = requested[0]
            if family not in _SOCKET_FAMILY:
                raise _Refuse(440, "refused.family")
        else:
            family = stun.FAMILY_IPV4  # RFC 6156 / 8656: IPv4 unless asked otherwise
        if (cfg.relay_ip4 if family == stun.FAMILY_IPV4 else cfg.relay_ip6) is None:
            raise _Refuse(440, "refused.family")
        if self.draining:
            self.stats["refused.drain"] += 1
            if cfg.alternate_server is not None:
                alt = stun.encode_address(*cfg.alternate_server)
                raise _Refuse(300, None, [(stun.ALTERNATE_SERVER, alt)])
            raise _Refuse(508)
        # A held reservation counts as an allocation, for the credential and the node: an
        # R-bit EVEN-PORT takes two; claiming a reservation turns its charge into this
        # allocation's (moved over when another credential claims it).
        reserve = even is not None and bool(even[0] & 0x80)
        key = auth.identity.quota_key
        need = 2 if reserve else 0 if held is not None and held[2] == key else 1
        if not self._quota.take(key, need, cfg.max_allocations_per_user):
            raise _Refuse(486, "refused.quota")
        held_now = len(self._allocations) + len(self._reservations) - (held is not None)
        if 0 < cfg.max_allocations_total < held_now + (2 if reserve else 1):
            self._quota.give(key, need)
            raise _Refuse(508, "refused.capacity")
        relayed = self.backend.open_relay(
            rq.listener,
            rq.client,
            _SOCKET_FAMILY[family],
            even_port=even is not None,
            reserve_next=reserve,
            reservation=token,
        )
        if relayed is None:
            self._quota.give(key, need)
            raise _Refuse(508, "refused.no_port")
        if reserve and relayed.reservation is None:
            self._quota.give(key, 1)  # no port was held after all
        if token is not None and held is not None:
            del self._reservations[token]
            if held[2] != key:
                self._quota.give(held[2], 1)
        # a dual allocation: the IPv6 half where this node relays IPv6, else an
        # ADDRESS-ERROR-CODE saying why (the IPv4 half stands either way, RFC 8656 7.2)
        extra: Relayed | None = None
        extra_error = 0
        if additional is not None:
            if cfg.relay_ip6 is None:
                extra_error = 440
                self.stats["refused.family"] += 1
            else:
                extra = self.backend.open_relay(rq.listener, rq.client, socket.AF_INET6)
                if extra is None:
                    extra_error = 508
                    self.stats["refused.no_port"] += 1
        requested_lifetime = _u32(lifetime_attr)
        lifetime = cfg.default_lifetime
        if requested_lifetime is not None:
            lifetime = max(cfg.default_lifetime, min(requested_lifetime, cfg.max_lifetime))
        alloc_id = f"{next(self._ids):x}"
        alloc = Allocation(
            id=alloc_id,
            listener=rq.listener,
            client=rq.client,
            identity=auth.identity,
            relayed=relayed,
            family=family,
            expires=now + lifetime,
            transaction_id=msg.transaction_id,
            response=b"",
            log=self._adapter(alloc_id),
            next_check=now + lifetime,
            extra=extra,
        )
        txid = msg.transaction_id
        host, port = relayed.address
        attrs = [(stun.XOR_RELAYED_ADDRESS, stun.encode_xor_address(host, port, txid))]
        if extra is not None:
            attrs.append((stun.XOR_RELAYED_ADDRESS, stun.encode_xor_address(*extra.address, txid)))
        attrs += [
            (stun.LIFETIME, struct.pack("!I", lifetime)),
            (
                stun.XOR_MAPPED_ADDRESS,
                stun.encode_xor_address(_plain_host(rq.client[0]), rq.client[1], txid),
            ),
        ]
        if relayed.reservation is not None:
            attrs.append((stun.RESERVATION_TOKEN, relayed.reservation))
            held_until = now + cfg.reservation_lifetime
            self._reservations[relayed.reservation] = (family, held_until, key)
        if additional is not None and extra_error:  # no IPv6 half: say why
            code = stun.encode_error_code(extra_error, REASONS[extra_error])
            attrs.append((error_attr, bytes([additional[0]]) + code[1:]))
        if cfg.bandwidth_bytes_per_second > 0:
            for handle in alloc.handles:
                self.backend.set_bandwidth(handle, cfg.bandwidth_bytes_per_second)
        self._allocations[(rq.listener, rq.client)] = alloc
        [(alloc.response, _)] = self._reply(rq, attrs, auth)
        alloc.log.info(
            "allocation created for %s:%d relayed port %d%s lifetime %ds",
            self._show(rq.client[0]),
            rq.client[1],
            port,
            "" if extra is None else f" and IPv6 port {extra.address[1]}",
            lifetime,
        )
        return [(alloc.response, rq.client)]

    def _refresh(self, rq: _Request, auth: _Auth, alloc: Allocation) -> Datagrams:
        cfg = self.config
        requested = rq.msg.get(stun.REQUESTED_ADDRESS_FAMILY)
        # a dual allocation is refreshed (or deleted) whole, with either family named
        if requested is not None and (len(requested) != 4 or requested[0] not in alloc.families):
            raise _Refuse(443, "refused.family_mismatch")
        value = rq.msg.get(stun.LIFETIME)
        asked = _u32(value)
        if value is not None and asked is None:
            raise _Refuse(400)
        if asked == 0:
            self._delete(alloc, "deleted by client")
            return self._reply(rq, [(stun.LIFETIME, struct.pack("!I", 0))], auth)
        lifetime = cfg.default_lifetime if asked is None else min(asked, cfg.max_lifetime)
        alloc.expires = rq.now + lifetime
        alloc.due(alloc.expires)
        alloc.log.debug("allocation refreshed for %ds", lifetime)
        return self._reply(rq, [(stun.LIFETIME, struct.pack("!I", lifetime))], auth)

    def _peers(self, rq: _Request, alloc: Allocation, *, check_port: bool = True) -> list[Address]:
        """The request's XOR-PEER-ADDRESSes, checked for family and against the policy.
        CreatePermission ignores the port (RFC 8656 section 9), so port 0 is fine there."""
        peers: list[Address] = []
        for attr_type, value in rq.msg.attributes:
            if attr_type != stun.XOR_PEER_ADDRESS:
                continue
            try:
                family, host, port = stun.decode_xor_address(value, rq.msg.transaction_id)
            except ValueError:
                raise _Refuse(400) from None
            if family not in alloc.families:
                raise _Refuse(443, "refused.family_mismatch")
            peers.append((host, port))
        if not peers:
            raise _Refuse(400)
        policy = self.config.policy
        for host, port in peers:
            if not policy.permits(host, port if check_port else None):
                alloc.log.debug("peer %s denied by policy", self._show(host))
                own = check_port and policy.is_own(host, port)
                raise _Refuse(403, "refused.own_address" if own else "refused.forbidden")
        return peers

    def _permit(self, alloc: Allocation, ips: list[str], now: float) -> None:
        fresh = {ip for ip in ips if ip not in alloc.permissions}
        if len(alloc.permissions) + len(fresh) > self.config.max_permissions:
            raise _Refuse(508, "refused.permissions")
        expires = now + self.config.permission_lifetime
        for ip in ips:
            if ip in fresh:
                alloc.log.debug("permission for %s", self._show(ip))
            alloc.permissions[ip] = expires
            self.backend.add_permission(alloc.handle_for(ip), ip)
        alloc.due(expires)

    def _create_permission(self, rq: _Request, auth: _Auth, alloc: Allocation) -> Datagrams:
        peers = self._peers(rq, alloc, check_port=False)
        self._permit(alloc, list(dict.fromkeys(host for host, _ in peers)), rq.now)
        return self._reply(rq, [], auth)

    def _channel_bind(self, rq: _Request, auth: _Auth, alloc: Allocation) -> Datagrams:
        now = rq.now
        number = rq.msg.get(stun.CHANNEL_NUMBER)
        if number is None or len(number) != 4:
            raise _Refuse(400)
        channel = struct.unpack("!H", number[:2])[0]
        if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
            raise _Refuse(400)
        peers = self._peers(rq, alloc)
        if len(peers) != 1:
            raise _Refuse(400)
        peer = peers[0]
        bound = alloc.channels.get(channel)
        if bound is not None and bound[0] != peer:
            raise _Refuse(400, "refused.channel_in_use")
        if alloc.peers.get(peer, channel) != channel:
            raise _Refuse(400, "refused.channel_in_use")
        for ch, (old_peer, _until) in alloc.cooldown.items():
            if (ch == channel) != (old_peer == peer):  # one matches, the other doesn't
                raise _Refuse(400, "refused.channel_cooldown")
        self._permit(alloc, [peer[0]], now)
        if not self.backend.claim_peer(alloc.handle_for(peer[0]), peer):
            # a shared relayed socket (--multiplex-peer) tells allocations apart by the
            # peer's address and port alone: another allocation already has this one
            raise _Refuse(403, "refused.peer_taken", reason=PEER_TAKEN_REASON)
        alloc.cooldown.pop(channel, None)
        expires = now + self.config.channel_lifetime
        if bound is None:
            alloc.log.debug("channel 0x%04x bound to %s", channel, self._show(peer[0]))
        alloc.channels[channel] = (peer, expires)
        alloc.peers[peer] = channel
        alloc.due(expires)
        self.backend.bind_channel(alloc.handle_for(peer[0]), channel, peer)
        return self._reply(rq, [], auth)

    # ------------------------------------------------------------------ indications

    def _send_indication(
        self, msg: stun.Message, listener: int, client: Address, now: float
    ) -> None:
        """Send indication (never authenticated, never answered): relay DATA to the peer."""
        alloc = self._lookup(listener, client, now)
        if alloc is None:
            self.stats["send.no_allocation"] += 1
            return
        if stun.unknown_required(msg, KNOWN_ATTRS[stun.SEND]):
            self.stats["send.unknown_attribute"] += 1
            return
        peer_value, data = msg.get(stun.XOR_PEER_ADDRESS), msg.get(stun.DATA_ATTR)
        if peer_value is None or data is None:
            self.stats["send.bad_request"] += 1
            return
        try:
            family, host, port = stun.decode_xor_address(peer_value, msg.transaction_id)
        except ValueError:
            self.stats["send.bad_request"] += 1
            return
        if family not in alloc.families:
            self.stats["send.family_mismatch"] += 1
            return
        if not self.config.policy.permits(host, port):
            self.stats["send.denied_peer"] += 1
            self.backend.count_drop("denied_peer")
            return
        expires = alloc.permissions.get(host)
        if expires is None or expires <= now:
            self.stats["send.no_permission"] += 1
            return
        handle = alloc.handle_for(host)
        if not self.backend.claim_peer(handle, (host, port)):
            self.stats["send.peer_taken"] += 1  # another allocation's (--multiplex-peer)
            self.backend.count_drop("peer_taken")
            return
        self.stats["send.ok"] += 1
        self.backend.send_to_peer(handle, (host, port), data)
