"""Long-term credentials and stateless nonces (relay/auth.py), alone and as the TURN core
applies them: 401/438 challenges, REST usernames and secret rotation, SHA-256 integrity."""

from __future__ import annotations

import base64
import hashlib
import os
import struct

import pytest

from ext import _stun as stun
from relay.auth import (
    PASSWORD_MD5,
    PASSWORD_SHA256,
    Credentials,
    NonceMint,
    NonceStatus,
    long_term_key,
    parse_rest_expiry,
    parse_rest_username,
    rest_password,
)
from tests.fakes import (
    NOW,
    REALM,
    SECRET,
    Client,
    make_server,
    requested_transport,
    rest_username,
)
from tests.fakes import rest_password as client_rest_password

A = ("198.51.100.20", 40000)

# ---------------------------------------------------------------- nonces


def test_nonce_roundtrip_and_binding() -> None:
    mint = NonceMint(b"n" * 32, lifetime=600)
    nonce = mint.issue(A, 1000.0)
    assert len(nonce) == 16 and nonce.isascii()
    assert mint.check(nonce, A, 1000.0) is NonceStatus.VALID
    assert mint.check(nonce, A, 1600.0) is NonceStatus.VALID
    assert mint.check(nonce, A, 1601.0) is NonceStatus.STALE
    assert mint.check(nonce, ("198.51.100.21", 40000), 1000.0) is NonceStatus.INVALID
    # bound to the IP only: the same host's other sockets may use it
    assert mint.check(nonce, ("198.51.100.20", 40001), 1000.0) is NonceStatus.VALID
    assert mint.check(nonce, A, 900.0) is NonceStatus.INVALID  # from the future
    other = NonceMint(b"m" * 32, lifetime=600)
    assert other.check(nonce, A, 1000.0) is NonceStatus.INVALID
    assert NonceMint(b"n" * 32, lifetime=600).check(nonce, A, 1000.0) is NonceStatus.VALID


@pytest.mark.parametrize(
    "nonce", [b"", b"x", b"!" * 16, b"A" * 16, b"A" * 15, b"A" * 17, "é".encode() * 8]
)
def test_forged_nonces_invalid(nonce: bytes) -> None:
    assert NonceMint(b"n" * 32, 600).check(nonce, A, 1000.0) is NonceStatus.INVALID


def test_tampered_timestamp_invalid() -> None:
    mint = NonceMint(b"n" * 32, lifetime=600)
    raw = bytearray(base64.urlsafe_b64decode(mint.issue(A, 1000.0) + b"=="))
    raw[3] ^= 1
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=")
    assert mint.check(forged, A, 1000.0) is NonceStatus.INVALID


def test_short_nonce_key_refused() -> None:
    with pytest.raises(ValueError):
        NonceMint(b"short", 600)


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("1700000000:abc", (1700000000, "abc")),
        ("1:a:b", (1, "a:b")),
        ("abc:1700000000", None),
        ("1700000000", None),
        ("1700000000:", None),
        (":abc", None),
        ("12a:abc", None),
        ("١٢٣:abc", None),  # non-ASCII digits
        ("1" * 13 + ":abc", None),
    ],
)
def test_parse_rest_username(username: str, expected: tuple[int, str] | None) -> None:
    assert parse_rest_username(username) == expected


@pytest.mark.parametrize(
    ("username", "expected"),
    [("1796325601", 1796325601), ("1", 1), ("1796325601:x", None), ("17a", None), ("1" * 13, None)],
)
def test_parse_rest_expiry(username: str, expected: int | None) -> None:
    assert parse_rest_expiry(username) == expected


def test_expiry_only_usernames_key_on_the_whole_username() -> None:
    """coturn accepts a TURN REST username that is only the expiry (what its turnutils_uclient
    sends with -W and no -u): no token id, so quota and revocation take the whole username."""
    creds = Credentials("r", [b"s"], {})
    identity, passwords = creds.lookup("1796325601") or (None, [])
    assert identity is not None and identity.expiry == 1796325601
    assert identity.quota_key == "rest:1796325601" and identity.token_id == "1796325601"
    assert identity.issued_token is None  # nothing the control plane issued
    assert passwords == [rest_password(b"s", "1796325601")]
    issued, _ = creds.lookup("1796325601:tok") or (None, [])
    assert issued is not None and issued.issued_token == issued.token_id == "tok"
    assert Credentials("r", [], {}).lookup("1796325601") is None  # REST needs a secret


def test_expiry_only_username_through_the_core() -> None:
    server, _ = make_server(max_allocations_per_user=1)
    name = str(int(NOW) + 3600)
    first = Client(server, username=name, password=client_rest_password(SECRET, name))
    assert first.allocate(NOW).ok
    second = Client(server, addr=("192.0.2.77", 2), username=name, password=first.password)
    assert second.allocate(NOW).code == 486  # the quota counts the whole username
    assert server.revoke([name], NOW) == 1  # revocation names the whole username
    assert second.allocate(NOW).code == 401
    stale = str(int(NOW) - 1)
    late = Client(server, addr=("192.0.2.78", 3), username=stale)
    late.password = client_rest_password(SECRET, stale)
    assert late.allocate(NOW).code == 401 and server.stats["auth.expired"] == 1


def test_rest_password_and_keys() -> None:
    assert rest_password(b"s", "1:x") == client_rest_password(b"s", "1:x")
    assert long_term_key("u", "r", "p") == hashlib.md5(b"u:r:p").digest()
    assert long_term_key("u", "r", "p", PASSWORD_SHA256) == hashlib.sha256(b"u:r:p").digest()


def test_credentials_lookup() -> None:
    creds = Credentials("r", [b"new", b"old"], {"alice": "pw", "123:static": "pw2"})
    identity, passwords = creds.lookup("alice") or (None, [])
    assert identity is not None and identity.expiry is None and passwords == ["pw"]
    identity, passwords = creds.lookup("123:static") or (None, [])  # static wins
    assert identity is not None and passwords == ["pw2"]
    identity, passwords = creds.lookup("99:tok") or (None, [])
    assert identity is not None and identity.expiry == 99 and identity.quota_key == "rest:tok"
    assert passwords == [rest_password(b"new", "99:tok"), rest_password(b"old", "99:tok")]
    assert creds.lookup("bob") is None
    assert creds.lookup("") is None
    assert creds.lookup("9:" + "x" * 600) is None
    assert Credentials("r", [], {}).lookup("99:tok") is None
    assert creds.keys("u", ["a", "b"], PASSWORD_MD5) == [
        hashlib.md5(b"u:r:a").digest(),
        hashlib.md5(b"u:r:b").digest(),
    ]


# ---------------------------------------------------------------- through the TURN core


def rest_client(server: object, expiry: float, secret: bytes = SECRET, **kw: object) -> Client:
    username = rest_username(expiry)
    return Client(server, username=username, password=client_rest_password(secret, username), **kw)  # type: ignore[arg-type]


def test_no_integrity_gets_401_with_realm_and_nonce() -> None:
    server, backend = make_server()
    client = Client(server)
    padding = (0x8050, b"p" * 64)  # a request big enough for the full answer
    reply = client.request(stun.ALLOCATE, [requested_transport(), padding], NOW, auth=False)
    assert (reply.code, reply.reason) == (401, "Unauthorized")
    assert reply.get(stun.REALM) == REALM.encode()
    assert reply.get(stun.NONCE)
    assert reply.get(stun.SOFTWARE) is None  # nothing the RFC does not require
    assert reply.msg.fingerprint_offset >= 0 and reply.msg.integrity_offset < 0
    assert len(reply.raw) <= len(client.sent[-1])
    assert backend.calls == []
    assert server.stats["auth.challenge"] == 1 and server.stats["allocate.401"] == 1


@pytest.mark.parametrize("method", [stun.REFRESH, stun.CREATE_PERMISSION, stun.CHANNEL_BIND])
def test_other_methods_need_integrity(method: int) -> None:
    server, _ = make_server()
    reply = Client(server).request(method, [(0x8050, b"p" * 64)], NOW, auth=False)
    assert reply.code == 401 and reply.get(stun.NONCE)


def test_minimal_allocate_401_never_larger_with_strict_setting() -> None:
    server, _ = make_server(unauth_amplification=1.0)
    client = Client(server)
    minimal = client.build(stun.ALLOCATE, [requested_transport()], auth=False, fingerprint=False)
    assert len(minimal) == 28
    assert client.send_raw(minimal, NOW) is None
    assert server.stats["drop.amplification"] == 1
    for size in range(0, 200, 4):  # whatever the request size, the answer is never bigger
        padded = [requested_transport(), (0x8050, b"p" * size)]
        data = client.build(stun.ALLOCATE, padded, auth=False)
        reply = client.send_raw(data, NOW)
        assert reply is None or (reply.code == 401 and len(reply.raw) <= len(data))


def test_minimal_allocate_gets_trimmed_401_by_default() -> None:
    server, _ = make_server()
    client = Client(server)
    minimal = client.build(stun.ALLOCATE, [requested_transport()], auth=False, fingerprint=False)
    reply = client.send_raw(minimal, NOW)
    assert reply is not None and reply.code == 401
    assert reply.get(stun.NONCE) and reply.get(stun.REALM) == REALM.encode()
    assert reply.get(stun.SOFTWARE) is None  # trimmed
    assert len(reply.raw) <= 3 * len(minimal)
    # aioice's first Allocate (LIFETIME + REQUESTED-TRANSPORT, 36 bytes) is answered
    aioice = client.build(
        stun.ALLOCATE,
        [(stun.LIFETIME, struct.pack("!I", 600)), requested_transport()],
        auth=False,
        fingerprint=False,
    )
    reply = client.send_raw(aioice, NOW)
    assert reply is not None and reply.code == 401 and len(reply.raw) <= 2 * len(aioice)


def test_huge_realm_drops_rather_than_amplify() -> None:
    server, _ = make_server(realm="r" * 200)
    client = Client(server)
    assert (
        client.send_raw(client.build(stun.ALLOCATE, [requested_transport()], auth=False), NOW)
        is None
    )
    assert server.stats["drop.amplification"] == 1


def test_stale_nonce_438_then_retry() -> None:
    server, _ = make_server(nonce_lifetime=600)
    client = Client(server)
    client.challenge(NOW)
    old = client.nonce
    reply = client.allocate(NOW + 601)
    assert (reply.code, reply.reason) == (438, "Stale Nonce")
    assert reply.get(stun.REALM) == REALM.encode()
    fresh = reply.get(stun.NONCE)
    assert fresh and fresh != old
    client.nonce = fresh
    assert client.allocate(NOW + 601).ok
    assert server.stats["auth.stale_nonce"] == 1
    # an allocation outliving its nonce is refreshed after one 438
    assert client.refresh(NOW + 1000, 3600).ok
    reply = client.refresh(NOW + 1300)
    assert reply.code == 438
    client.nonce = reply.get(stun.NONCE)
    assert client.refresh(NOW + 1300).ok


def test_forged_and_foreign_nonces_rejected() -> None:
    server, backend = make_server()
    client = Client(server)
    client.nonce = b"AAAAAAAAAAAAAAAA"
    reply = client.allocate(NOW)
    assert reply.code == 438 and reply.get(stun.NONCE) != b"AAAAAAAAAAAAAAAA"
    other = Client(server, addr=("192.0.2.77", 5555))
    other.challenge(NOW)
    client.nonce = other.nonce  # another client's (valid) nonce
    assert client.allocate(NOW).code == 438
    assert server.stats["auth.bad_nonce"] == 2
    assert backend.calls == []
    same_ip = Client(server, addr=(client.addr[0], client.addr[1] + 1))
    same_ip.challenge(NOW)
    client.nonce = same_ip.nonce  # same IP, other port: the host's sockets share nonces
    assert client.allocate(NOW).ok


def test_wrong_password_and_unknown_user_get_401_with_fresh_nonce() -> None:
    server, backend = make_server()
    client = Client(server, password="nope")
    client.challenge(NOW)
    reply = client.allocate(NOW)
    assert reply.code == 401 and reply.get(stun.NONCE) and reply.get(stun.REALM)
    assert reply.msg.integrity_offset < 0
    stranger = Client(server, username="mallory", password="x")
    stranger.challenge(NOW)
    assert stranger.allocate(NOW).code == 401
    wrong_realm = Client(server, realm="elsewhere")
    wrong_realm.challenge(NOW)
    assert wrong_realm.allocate(NOW).code == 401
    assert server.stats["auth.bad_integrity"] == 1
    assert server.stats["auth.unknown_user"] == 1
    assert server.stats["auth.wrong_realm"] == 1
    assert backend.calls == []


def test_missing_username_is_400() -> None:
    server, _ = make_server()
    client = Client(server)
    client.challenge(NOW)
    data = stun.encode(
        stun.ALLOCATE,
        stun.REQUEST,
        os.urandom(12),
        [requested_transport(), (stun.NONCE, client.nonce or b""), (0x8050, b"p" * 64)],
        client.key,
    )
    reply = client.send_raw(data, NOW)
    assert reply is not None and reply.code == 400 and reply.reason == "Bad Request"


def test_rest_credentials_and_rotation() -> None:
    server, _ = make_server(auth_secrets=[b"new-secret", b"old-secret"])
    for secret, port in ((b"new-secret", 1), (b"old-secret", 2)):
        client = rest_client(server, NOW + 3600, secret, addr=("192.0.2.9", port))
        client.challenge(NOW)
        reply = client.allocate(NOW)
        assert reply.ok and reply.verify(client.key)
    retired = rest_client(server, NOW + 3600, b"retired", addr=("192.0.2.9", 3))
    retired.challenge(NOW)
    assert retired.allocate(NOW).code == 401
    assert server.allocation_count == 2


def test_expired_rest_username() -> None:
    server, backend = make_server()
    late = rest_client(server, NOW - 1)
    late.challenge(NOW)
    reply = late.allocate(NOW)
    assert reply.code == 401 and server.stats["auth.expired"] == 1
    assert backend.calls == []
    # a username that expires during the allocation no longer keeps it alive: Refresh,
    # CreatePermission and ChannelBind get 401 and the allocation ends at its lifetime
    client = rest_client(server, NOW + 60, addr=("192.0.2.9", 9))
    client.challenge(NOW)
    assert client.allocate(NOW).ok
    assert client.refresh(NOW + 30, 600).ok  # still valid: refreshed to NOW + 630
    later = NOW + 120
    client.challenge(later)  # a fresh nonce (that Allocate gets 437 or 401; we only want it)
    for reply in (
        client.refresh(later, 600),
        client.permission(later, ("8.8.8.8", 1)),
        client.channel_bind(later, 0x4000, ("8.8.8.8", 1)),
    ):
        assert reply.code == 401 and reply.get(stun.NONCE) and reply.get(stun.REALM)
    assert server.stats["auth.expired_allocation"] == 3
    assert client.allocate(later).code == 401  # and no new allocation
    assert server.allocation_count == 1
    server.sweep(NOW + 631)
    assert server.allocation_count == 0 and server.stats["expired.allocation"] == 1


def test_static_user() -> None:
    server, _ = make_server(static_users={"bob": "builder"}, auth_secrets=[])
    client = Client(server, username="bob", password="builder")
    client.challenge(NOW)
    assert client.allocate(NOW).ok


def test_sha256_integrity_answered_in_kind() -> None:
    server, _ = make_server()
    client = Client(server, sha256=True)
    client.challenge(NOW)
    reply = client.allocate(NOW)
    assert reply.ok
    assert reply.msg.integrity256_offset >= 0 and reply.msg.integrity_offset < 0
    assert reply.verify(client.key)
    assert reply.msg.fingerprint_offset >= 0
    error = client.allocate(NOW)  # 437: errors after authentication are protected too
    assert error.code == 437 and error.verify(client.key) and error.msg.integrity256_offset >= 0


def test_sha256_integrity_with_md5_key_and_password_algorithm() -> None:
    server, _ = make_server()
    client = Client(server)
    client.challenge(NOW)
    md5_key = client.key
    txid = os.urandom(12)
    attrs = [
        requested_transport(),
        (stun.USERNAME, b"alice"),
        (stun.REALM, REALM.encode()),
        (stun.NONCE, client.nonce or b""),
    ]
    data = stun.encode(stun.ALLOCATE, stun.REQUEST, txid, attrs, md5_key, sha256=True)
    reply = client.send_raw(data, NOW)
    assert reply is not None and reply.ok and reply.verify(md5_key)
    # PASSWORD-ALGORITHM SHA-256 pins the SHA-256 key
    c2 = Client(server, addr=("192.0.2.60", 1), sha256=True)
    c2.challenge(NOW)
    algorithm = (stun.PASSWORD_ALGORITHM, struct.pack("!HH", PASSWORD_SHA256, 0))
    assert c2.allocate(NOW, [requested_transport(), algorithm]).ok
    c3 = Client(server, addr=("192.0.2.61", 1))
    c3.challenge(NOW)
    bogus = (stun.PASSWORD_ALGORITHM, struct.pack("!HH", 9, 0))
    assert c3.allocate(NOW, [requested_transport(), bogus, (0x8050, b"p" * 64)]).code == 400


def test_authenticated_answers_carry_integrity_and_fingerprint() -> None:
    server, _ = make_server()
    client = Client(server)
    client.challenge(NOW)
    for reply in (
        client.allocate(NOW),
        client.refresh(NOW, 600),
        client.permission(NOW, ("8.8.8.8", 1)),
        client.channel_bind(NOW, 0x4000, ("8.8.8.8", 1)),
        client.permission(NOW, ("10.0.0.1", 1)),  # 403
    ):
        assert reply.msg.integrity_offset >= 0 and reply.msg.fingerprint_offset >= 0
        assert reply.verify(client.key)
        assert reply.get(stun.SOFTWARE) == b"Clickacall"


def test_wrong_credentials_441() -> None:
    server, _ = make_server(static_users={"alice": "wonderland", "bob": "builder"})
    alice = Client(server)
    alice.challenge(NOW)
    assert alice.allocate(NOW).ok
    bob = Client(server, username="bob", password="builder")  # same 5-tuple
    bob.nonce = alice.nonce
    for reply in (bob.refresh(NOW), bob.permission(NOW, ("8.8.8.8", 1))):
        assert (reply.code, reply.reason) == (441, "Wrong Credentials")
    assert bob.allocate(NOW).code == 437
