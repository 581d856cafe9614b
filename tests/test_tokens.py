"""Session tokens, relay credentials and API keys (control/tokens.py, control/keys.py).

Relay credentials are checked against the relay's own credential code (relay/auth.py), so
what the control plane hands out is what a relay node accepts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control import keys, tokens
from control.models import ApiKey, Role, SessionToken
from control.tokens import TokenError, TokenSigner
from relay.auth import Credentials, parse_rest_username

NOW = 1_700_000_000.0
KEY_A = b"a" * 32
KEY_B = b"b" * 32
SECRET = b"relay-shared-secret"


def never(_: str) -> bool:
    return False


def issue_visitor(signer: TokenSigner, **kw: object) -> tuple[str, SessionToken]:
    args: dict[str, object] = {"tenant_id": "t1", "call_id": "c1", "role": Role.VISITOR, "now": NOW}
    args.update(kw)
    return signer.issue(**args)  # type: ignore[arg-type]


def reasons(signer: TokenSigner, token: str, now: float = NOW) -> str:
    with pytest.raises(TokenError) as info:
        signer.verify(token, now, is_revoked=never)
    return info.value.reason


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forge(payload: dict[str, object], key: bytes = KEY_A) -> str:
    body = b64(json.dumps(payload).encode())
    sig = hmac.new(key, f"v1.{body}".encode(), hashlib.sha256).digest()
    return f"v1.{body}.{b64(sig)}"


# --- session tokens ---------------------------------------------------------------------


def test_visitor_token_round_trip() -> None:
    signer = TokenSigner([KEY_A])
    token, record = issue_visitor(signer)
    assert token.startswith("v1.") and token.count(".") == 2
    got = signer.verify(token, NOW + 1, is_revoked=never)
    assert got == record
    assert got.role is Role.VISITOR and got.staff_id is None
    assert got.call_id == "c1" and got.tenant_id == "t1"
    assert got.expires_at == NOW + tokens.DEFAULT_TOKEN_TTL


def test_staff_token_carries_staff_id() -> None:
    signer = TokenSigner([KEY_A])
    token, record = signer.issue(
        tenant_id="t1", call_id="c1", role=Role.STAFF, staff_id="s9", now=NOW, ttl=60
    )
    got = signer.verify(token, NOW, is_revoked=never)
    assert got.role is Role.STAFF and got.staff_id == "s9" and got == record
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert set(payload) == {"tid", "ten", "call", "role", "staff", "iat", "exp"}


def test_payload_is_the_pinned_format() -> None:
    signer = TokenSigner([KEY_A])
    token, record = issue_visitor(signer, token_id="tok1", ttl=120)
    _, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert payload == {
        "tid": "tok1",
        "ten": "t1",
        "call": "c1",
        "role": "visitor",
        "iat": int(NOW),
        "exp": int(NOW) + 120,
    }
    expected = hmac.new(KEY_A, f"v1.{body}".encode(), hashlib.sha256).digest()
    assert sig == b64(expected)
    assert record.id == "tok1"


@pytest.mark.parametrize(
    ("role", "staff"), [(Role.STAFF, None), (Role.VISITOR, "s1"), (Role.STAFF, "")]
)
def test_role_and_staff_id_must_agree(role: Role, staff: str | None) -> None:
    with pytest.raises(ValueError):
        TokenSigner([KEY_A]).issue(tenant_id="t", call_id="c", role=role, staff_id=staff, now=NOW)


def test_issue_refuses_missing_scope_and_bad_ttl() -> None:
    signer = TokenSigner([KEY_A])
    with pytest.raises(ValueError):
        signer.issue(tenant_id="t", call_id="", role=Role.VISITOR, now=NOW)
    with pytest.raises(ValueError):
        issue_visitor(signer, ttl=1)
    with pytest.raises(ValueError):
        issue_visitor(signer, ttl=float("nan"))
    with pytest.raises(ValueError):
        issue_visitor(signer, token_id="has:colon")
    _, record = issue_visitor(signer, ttl=10**9)
    assert record.expires_at - record.issued_at == tokens.MAX_TOKEN_TTL


def test_signer_needs_strong_keys() -> None:
    with pytest.raises(ValueError):
        TokenSigner([])
    with pytest.raises(ValueError):
        TokenSigner([b"short"])


def test_expired_at_exp_exactly() -> None:
    signer = TokenSigner([KEY_A])
    token, record = issue_visitor(signer, ttl=60)
    signer.verify(token, record.expires_at - 0.001, is_revoked=never)
    assert reasons(signer, token, record.expires_at) == tokens.EXPIRED
    assert reasons(signer, token, record.expires_at + 3600) == tokens.EXPIRED


def test_not_yet_valid_beyond_skew() -> None:
    signer = TokenSigner([KEY_A])
    token, _ = issue_visitor(signer, now=NOW + 100)
    signer.verify(token, NOW + 100 - tokens.CLOCK_SKEW, is_revoked=never)  # within skew
    assert reasons(signer, token, NOW) == tokens.NOT_YET_VALID


def test_revoked() -> None:
    signer = TokenSigner([KEY_A])
    token, record = issue_visitor(signer)
    asked: list[str] = []

    def is_revoked(tid: str) -> bool:
        asked.append(tid)
        return tid == record.id

    with pytest.raises(TokenError) as info:
        signer.verify(token, NOW, is_revoked=is_revoked)
    assert info.value.reason == tokens.REVOKED and asked == [record.id]


def test_revocation_not_asked_for_bad_tokens() -> None:
    signer = TokenSigner([KEY_A])
    token, _ = issue_visitor(signer, ttl=60)

    def boom(_: str) -> bool:
        raise AssertionError("revocation looked up for a token that fails anyway")

    for bad, now in ((token, NOW + 61), (token[:-2] + "AA", NOW), ("junk", NOW)):
        with pytest.raises(TokenError):
            signer.verify(bad, now, is_revoked=boom)


def test_key_rotation() -> None:
    old = TokenSigner([KEY_A])
    rotated = TokenSigner([KEY_B, KEY_A])  # new key signs, old still verifies
    retired = TokenSigner([KEY_B])
    old_token, _ = issue_visitor(old)
    new_token, _ = issue_visitor(rotated)
    assert rotated.verify(old_token, NOW, is_revoked=never).call_id == "c1"
    assert rotated.verify(new_token, NOW, is_revoked=never).call_id == "c1"
    assert retired.verify(new_token, NOW, is_revoked=never).call_id == "c1"
    assert reasons(retired, old_token) == tokens.BAD_SIGNATURE
    assert reasons(old, new_token) == tokens.BAD_SIGNATURE


def test_tampered_payload_is_bad_signature() -> None:
    signer = TokenSigner([KEY_A])
    token, _ = issue_visitor(signer)
    _, body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["call"] = "someone-elses-call"
    assert reasons(signer, f"v1.{b64(json.dumps(payload).encode())}.{sig}") == "bad signature"
    payload["role"] = "staff"
    assert reasons(signer, f"v1.{b64(json.dumps(payload).encode())}.{sig}") == "bad signature"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1..",
        "v1.abc",
        "v2.eyJ9.AAAA",
        "v1.eyJ9.AAAA.extra",
        "v1.not base64.AAAA",
        "v1.eyJ9.AAAA",  # signature of the wrong length
        "v1.e=.AAAA",
        "v1.\u00e9\u00e9.AAAA",
        "x" * 5000,
    ],
)
def test_malformed(token: str) -> None:
    assert reasons(TokenSigner([KEY_A]), token) == tokens.MALFORMED


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"tid": "t", "ten": "x", "call": "c", "role": "admin", "iat": 1, "exp": 2},
        {"tid": "t", "ten": "x", "call": "c", "role": "staff", "iat": 1, "exp": 2},
        {"tid": "t", "ten": "x", "call": "c", "role": "visitor", "staff": "s", "iat": 1, "exp": 2},
        {"tid": "t", "ten": "x", "call": "c", "role": "visitor", "iat": "1", "exp": 2},
        {"tid": "t", "ten": "x", "call": "c", "role": "visitor", "iat": True, "exp": 2},
        {"tid": "t", "ten": "x", "call": "c", "role": "visitor", "iat": 5, "exp": 5},
        {"tid": "", "ten": "x", "call": "c", "role": "visitor", "iat": 1, "exp": 2},
        {"tid": "t", "ten": "x", "call": None, "role": "visitor", "iat": 1, "exp": 2},
    ],
)
def test_signed_but_malformed_payload(payload: dict[str, object]) -> None:
    assert reasons(TokenSigner([KEY_A]), forge(payload), now=1.5) == tokens.MALFORMED


def test_signed_non_object_payload() -> None:
    signer = TokenSigner([KEY_A])
    for payload in ([1, 2], "x", 3):
        body = b64(json.dumps(payload).encode())
        sig = hmac.new(KEY_A, f"v1.{body}".encode(), hashlib.sha256).digest()
        assert reasons(signer, f"v1.{body}.{b64(sig)}") == tokens.MALFORMED


def test_non_canonical_signature_spelling_is_refused() -> None:
    signer = TokenSigner([KEY_A])
    token, _ = issue_visitor(signer)
    head, _, sig = token.rpartition(".")
    # 32 bytes -> 43 characters; the last carries 2 unused bits that must be zero
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = sig[:-1] + alphabet[alphabet.index(sig[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(sig + "=")
    assert reasons(signer, f"{head}.{twin}") == tokens.MALFORMED


@given(st.text(max_size=300))
def test_fuzz_never_crashes(text: str) -> None:
    signer = TokenSigner([KEY_A])
    with pytest.raises(TokenError):
        signer.verify(text, NOW, is_revoked=never)


@given(st.binary(min_size=1, max_size=200))
def test_fuzz_bodies_with_valid_signature(raw: bytes) -> None:
    signer = TokenSigner([KEY_A])
    body = b64(raw)
    sig = hmac.new(KEY_A, f"v1.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError) as info:
        signer.verify(f"v1.{body}.{b64(sig)}", NOW, is_revoked=never)
    assert info.value.reason in {tokens.MALFORMED, tokens.EXPIRED, tokens.NOT_YET_VALID}


def test_token_ids_are_unique() -> None:
    signer = TokenSigner([KEY_A])
    ids = {issue_visitor(signer)[1].id for _ in range(200)}
    assert len(ids) == 200


# --- relay credentials ------------------------------------------------------------------


def test_relay_credentials_match_the_relay() -> None:
    username, password = tokens.relay_credentials(SECRET, "tok123", 3600, NOW)
    assert username == f"{int(NOW) + 3600}:tok123"
    expected = base64.b64encode(hmac.new(SECRET, username.encode(), hashlib.sha1).digest())
    assert password == expected.decode()
    # what a relay node with this secret (and one being rotated out) accepts
    found = Credentials("example", [b"other-secret", SECRET], {}).lookup(username)
    assert found is not None
    identity, candidates = found
    assert password in candidates
    assert identity.quota_key == "rest:tok123" and identity.expiry == int(NOW) + 3600
    assert parse_rest_username(username) == (int(NOW) + 3600, "tok123")


def test_relay_ttl_policy() -> None:
    assert tokens.relay_ttl(None) == tokens.DEFAULT_RELAY_TTL == 4 * 3600
    assert tokens.relay_ttl(10**9) == tokens.MAX_RELAY_TTL
    assert tokens.relay_ttl(600.9) == 600
    for bad in (0, -5, 59, float("inf"), float("nan"), True):
        with pytest.raises(ValueError):
            tokens.relay_ttl(bad)
    username, _ = tokens.relay_credentials(SECRET, "t", None, NOW)
    assert username.startswith(f"{int(NOW) + tokens.DEFAULT_RELAY_TTL}:")


def test_relay_credentials_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        tokens.relay_credentials(b"", "t", None, NOW)
    for bad in ("", "a:b", "sp ace", "x" * 129):
        with pytest.raises(ValueError):
            tokens.relay_credentials(SECRET, bad, None, NOW)


def test_ice_servers() -> None:
    servers = tokens.ice_servers(
        {
            "n1": ["stun:r1.example:3478", "turn:r1.example:3478?transport=udp"],
            "n2": ["turns:r2.example:5349", "turn:r1.example:3478?transport=udp"],
        },
        "123:tok",
        "pw",
    )
    assert servers == [
        {"urls": ["turn:r1.example:3478?transport=udp"], "username": "123:tok", "credential": "pw"},
        {"urls": ["stun:r1.example:3478"]},
        {"urls": ["turns:r2.example:5349"], "username": "123:tok", "credential": "pw"},
    ]
    assert tokens.ice_servers({}, "u", "p") == []
    with pytest.raises(ValueError):
        tokens.ice_servers({"n": ["http://evil"]}, "u", "p")
    with pytest.raises(ValueError):
        tokens.ice_servers({"n": ["turn:"]}, "u", "p")


def test_ice_servers_list_udp_then_tcp_then_tls_443_first() -> None:
    """Browsers try a server's URLs in order: UDP first, then TCP, then TLS (443 first), so a
    visitor behind a firewall that drops UDP falls back by itself."""
    urls = [
        "turns:r.example:5349?transport=tcp",
        "turns:r.example:443?transport=tcp",
        "turn:r.example:3478?transport=tcp",
        "stun:r.example:3478",
        "turn:r.example:3478?transport=udp",
        "turn:[2001:db8::1]:3478?transport=udp",
    ]
    (turn, stun) = tokens.ice_servers({"n": urls}, "u", "p")
    assert turn["urls"] == [
        "turn:r.example:3478?transport=udp",
        "turn:[2001:db8::1]:3478?transport=udp",
        "turn:r.example:3478?transport=tcp",
        "turns:r.example:443?transport=tcp",
        "turns:r.example:5349?transport=tcp",
    ]
    assert stun == {"urls": ["stun:r.example:3478"]}
    assert tokens.turn_rank("turn:h") == (0, 0)  # no transport: UDP
    assert tokens.turn_rank("turns:h") == (2, 0)  # no port: 443


def test_raw_credentials() -> None:
    record, servers = tokens.raw_credentials(SECRET, "t1", {"n": ["turn:h:3478"]}, 600, NOW)
    assert record.call_id is None and record.role is None and record.tenant_id == "t1"
    assert record.expires_at == int(NOW) + 600
    (server,) = servers
    assert server["username"] == f"{int(NOW) + 600}:{record.id}"
    found = Credentials("r", [SECRET], {}).lookup(server["username"])
    assert found is not None and server["credential"] in found[1]


# --- API keys ---------------------------------------------------------------------------


def counter_bytes() -> keys.TokenBytes:
    counter = itertools.count(1)
    return lambda n: bytes([next(counter) % 256]) * n


def test_new_api_key_format_and_storage() -> None:
    secret, record = keys.new_api_key("t1", NOW)
    assert secret.startswith("ck_live_")
    kind, hex_id, body = secret.split("_", 3)[1:]
    assert kind == "live" and len(hex_id) == 12 and len(body) == 43
    assert record.id == f"ck_{hex_id}" and record.tenant_id == "t1"
    assert record.key_hash == hashlib.sha256(secret.encode()).digest() == keys.hash_key(secret)
    assert secret not in repr(record)
    assert keys.key_id(secret) == record.id
    assert keys.verify_api_key(secret, record) is record


def test_api_key_is_deterministic_under_injected_randomness() -> None:
    secret, record = keys.new_api_key("t1", NOW, token_bytes=counter_bytes())
    assert secret == "ck_live_010101010101_" + b64(b"\x02" * 32)
    assert record.created_at == NOW


def test_keys_are_unique() -> None:
    minted = [keys.new_api_key("t", NOW) for _ in range(100)]
    assert len({s for s, _ in minted}) == len({r.id for _, r in minted}) == 100


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "ck_live_",
        "Bearer ck_live_x",
        "ck_live_3F9A1C07B2D4_" + "A" * 43,  # uppercase id
        "ck_test_3f9a1c07b2d4_" + "A" * 43,
        "ck_live_3f9a1c07b2d4_" + "A" * 42,
        "ck_live_3f9a1c07b2d4_" + "A" * 44,
        "ck_live_3f9a1c07b2d4_" + "A" * 42 + "=",
        "ck_live_3f9a1c07b2d4_" + "A" * 42 + "\n",
        "x" * 10_000,
    ],
)
def test_malformed_keys_are_unauthorized(bad: str) -> None:
    with pytest.raises(keys.Unauthorized) as info:
        keys.key_id(bad)
    assert info.value.reason == "malformed"


@given(st.text(max_size=200))
def test_fuzz_keys(text: str) -> None:
    try:
        parsed = keys.parse_key(text)
    except keys.Unauthorized:
        return
    assert parsed.key_id.startswith("ck_")


def test_verify_api_key_failures() -> None:
    secret, record = keys.new_api_key("t1", NOW)
    other, other_record = keys.new_api_key("t1", NOW)

    def reason(key: str, stored: ApiKey | None) -> str:
        with pytest.raises(keys.Unauthorized) as info:
            keys.verify_api_key(key, stored)
        return info.value.reason

    assert reason(secret, None) == "unknown"
    assert reason(other, record) == "mismatch"
    # same id, different secret (a guessed body for a known public id)
    guessed = secret[: -len("AAAA")] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    assert reason(guessed, record) == "mismatch"
    op, _ = keys.new_operator_key()
    assert reason(op, record) == "wrong kind"
    revoked = keys.revoke(record, NOW + 5)
    assert revoked.revoked_at == NOW + 5 and record.revoked_at is None
    assert keys.revoke(revoked, NOW + 99).revoked_at == NOW + 5
    assert reason(secret, revoked) == "revoked"
    assert keys.verify_api_key(other, other_record) is other_record


def test_operator_keys() -> None:
    secret, op = keys.new_operator_key()
    spare_secret, spare = keys.new_operator_key()
    assert secret.startswith("ck_op_")
    assert keys.verify_operator_key(secret, [spare, op]) is op
    assert keys.verify_operator_key(spare_secret, [spare, op]) is spare
    tenant_secret, _ = keys.new_api_key("t", NOW)
    for bad in (tenant_secret, keys.new_operator_key()[0]):
        with pytest.raises(keys.Unauthorized):
            keys.verify_operator_key(bad, [op, spare])
    with pytest.raises(keys.Unauthorized):
        keys.verify_operator_key(secret, [])


def test_bearer_header() -> None:
    assert keys.bearer("Bearer ck_live_x") == "ck_live_x"
    assert keys.bearer("  bearer   ck_live_x ") == "ck_live_x"
    for bad in (None, "", "Basic abc", "Bearer", "Bearer   "):
        with pytest.raises(keys.Unauthorized):
            keys.bearer(bad)
