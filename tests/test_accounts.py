"""control.accounts, sans-I/O: password hashing, secrets, call references, the throttle."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control import accounts
from control.accounts import Throttle


def test_passwords_are_argon2id_and_verify() -> None:
    stored = accounts.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert accounts.verify_password(stored, "correct horse battery")
    assert not accounts.verify_password(stored, "correct horse batterY")
    assert not accounts.verify_password(None, "correct horse battery")  # no account: dummy
    assert not accounts.verify_password("not a hash", "correct horse battery")
    assert not accounts.verify_password(stored, "x" * 10_000)
    assert not accounts.needs_rehash(stored)
    assert accounts.needs_rehash("garbage")
    assert accounts.hash_password("correct horse battery") != stored  # salted


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "at least 10"),
        ("x" * 201, "at most 200"),
        ("tab\tinside-it", "control characters"),
    ],
)
def test_password_rules(password: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        accounts.hash_password(password)
    accounts.check_password("x" * 10)
    accounts.check_password("ü" * 200)


def test_emails() -> None:
    assert accounts.normalize_email("  Ann.Lee@Example.COM ") == "ann.lee@example.com"
    for bad in ("", "ann", "ann@", "@example.com", "ann@example", "a b@example.com", "a@b@c.de"):
        with pytest.raises(ValueError, match="email"):
            accounts.normalize_email(bad)
    with pytest.raises(ValueError):
        accounts.normalize_email("a" * 60 + "@" + "b" * 200 + ".com")


def test_secrets_are_random_and_stored_hashed() -> None:
    a, b = accounts.new_secret(), accounts.new_secret()
    assert a != b and len(a) >= 43
    assert accounts.secret_hash(a) == hashlib.sha256(a.encode()).hexdigest()
    assert accounts.same(a, a) and not accounts.same(a, b)


def test_call_references() -> None:
    refs = {accounts.new_call_ref() for _ in range(200)}
    assert len(refs) == 200
    for ref in refs:
        assert len(ref) == 9 and ref[4] == "-"
        assert all(c in accounts.CROCKFORD for c in ref.replace("-", ""))
        assert accounts.parse_call_ref(ref) == ref
    assert accounts.parse_call_ref("k7q2 m9xd") == "K7Q2-M9XD"
    assert accounts.parse_call_ref("KOQI-LOXD") == "K0Q1-10XD"  # O is 0, I and L are 1
    for bad in ("K7Q2-M9X", "K7Q2-M9XDD", "K7Q2-M9XU", "K7Q2_M9XD"):
        with pytest.raises(ValueError, match="8 letters"):
            accounts.parse_call_ref(bad)


@given(st.text(max_size=20))
def test_call_reference_parser_never_crashes(text: str) -> None:
    try:
        out = accounts.parse_call_ref(text)
    except ValueError:
        return
    assert accounts.parse_call_ref(out) == out


def test_throttle_burst_then_one_per_interval() -> None:
    t = Throttle(burst=5, interval=20.0)
    keys = ["email:a@x.eu", "net:192.0.2.0/24"]
    assert [t.take(keys, 100.0) for _ in range(5)] == [0.0] * 5
    assert t.take(keys, 100.0) == pytest.approx(20.0)
    assert t.take(keys, 110.0) == pytest.approx(10.0)
    assert t.take(keys, 120.0) == 0.0  # one more after the interval
    assert t.take(keys, 120.0) == pytest.approx(20.0)
    # another email from the same network is held by the network's bucket ...
    assert t.take(["email:b@x.eu", "net:192.0.2.0/24"], 121.0) > 0
    # ... and a refused attempt takes nothing from the buckets that had room
    assert t.take(["email:b@x.eu"], 121.0) == 0.0
    assert t.take(["email:b@x.eu", "net:198.51.100.0/24"], 121.0) == 0.0
    t.forgive("email:a@x.eu")
    assert t.take(["email:a@x.eu"], 121.0) == 0.0
    # full again after burst * interval, never more than the burst
    assert t.take(keys, 1000.0) == 0.0
    assert [t.take(keys, 1000.0) for _ in range(4)] == [0.0] * 4
    assert t.take(keys, 1000.0) > 0


def test_a_refund_gives_back_one_try_never_past_the_burst() -> None:
    t = Throttle(burst=3, interval=20.0)
    net = ["net:192.0.2.0/24"]
    for _ in range(10):  # ten people behind one address sign in right, one after another
        assert t.take(net, 100.0) == 0.0
        t.refund(net[0])
    assert [t.take(net, 100.0) for _ in range(3)] == [0.0] * 3  # still the whole burst ...
    assert t.take(net, 100.0) > 0  # ... and no more: refunds never raise it past the burst
    t.refund("never seen")  # nothing to give back
    assert len(t) == 1


def test_throttle_table_is_bounded() -> None:
    t = Throttle(burst=1, interval=60.0, entries=3)
    for i in range(10):
        assert t.take([f"k{i}"], 0.0) == 0.0
    assert len(t) == 3
    assert t.take(["k9"], 1.0) > 0  # remembered
    assert t.take(["k0"], 1.0) == 0.0  # forgotten: a fresh burst
    with pytest.raises(ValueError):
        Throttle(burst=0)


# --- two-step sign-in ------------------------------------------------------------------------


def test_a_totp_code_is_accepted_for_its_step_and_the_steps_either_side() -> None:
    secret = accounts.new_totp_secret()
    now = 1_700_000_015.0  # mid-step
    step = int(now // 30)
    for offset in (-1, 0, 1):
        code = accounts.totp_code(secret, now + offset * 30)
        assert accounts.totp_step(secret, code, now) == step + offset
        assert accounts.totp_step(secret, f" {code[:3]} {code[3:]} ", now) == step + offset
    for offset in (-2, 2):
        code = accounts.totp_code(secret, now + offset * 30)
        if code not in {accounts.totp_code(secret, now + k * 30) for k in (-1, 0, 1)}:
            assert accounts.totp_step(secret, code, now) is None
    for bad in ("", "12345", "1234567", "abcdef", "１２３４５６", "12345\x00"):
        assert accounts.totp_step(secret, bad, now) is None
    assert accounts.totp_uri(secret, "a@b.example").startswith(
        f"otpauth://totp/Clickacall:a%40b.example?secret={secret}&issuer=Clickacall"
    )


def test_recovery_codes_are_random_and_read_leniently() -> None:
    codes = accounts.new_recovery_codes()
    assert len(codes) == accounts.RECOVERY_CODES == len(set(codes))
    for code in codes:
        assert len(code) == 11 and code[5] == "-"
        hashed = accounts.recovery_hash(code)
        assert hashed is not None and len(hashed) == 64
        assert accounts.recovery_hash(code.upper().replace("-", " ")) == hashed
        typed = code.upper().replace("0", "O").replace("1", "I")  # what a person may type
        assert accounts.recovery_hash(typed) == hashed
    for bad in ("", "abc", "abcde-fghij-k", "uuuuu-uuuuu", "12345-6789!"):
        assert accounts.recovery_hash(bad) is None
