"""Staff accounts, sans-I/O: passwords, the secrets of invitations and console sessions, the
call reference a visitor sees, and the sign-in throttle.

- Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended
  set). An unknown email is checked against a dummy hash, so a refusal takes as long whether
  or not the account exists.
- Invitation links and session cookies carry a random secret (32 bytes, base64url); only its
  SHA-256 (hex) is stored, so a copy of the database signs nobody in.
- A call reference is 8 characters of Crockford's base32 (no I, L, O, U), shown ``K7Q2-M9XD``;
  what a person types back is read leniently (lower case, ``O`` for 0, ``I``/``L`` for 1, any
  dashes or spaces).
- Two-factor sign-in is TOTP (RFC 6238: 6 digits, 30 s steps, pyotp): a code of the step
  before or after now is accepted too (clocks drift), and :func:`totp_step` says which step
  matched so the store can refuse the same code twice. Recovery codes are 10 random characters
  of Crockford's base32 (50 bits, shown ``ab3d7-k9m2x``), read as leniently as call references,
  stored as SHA-256 like the other secrets.
- :class:`Throttle` is a token bucket per key (an email, a client's /24 or /48 prefix): a
  burst of tries, then one per interval. It lives in the process's memory, in a table of
  bounded size (the least recently used key goes first), so a flood of keys costs memory
  once, not without end.

Nothing here does I/O or reads the clock; callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic_core import PydanticCustomError

MIN_PASSWORD: Final = 10
MAX_PASSWORD: Final = 200
MAX_EMAIL: Final = 254
SECRET_BYTES: Final = 32
INVITATION_TTL: Final = 7 * 24 * 3600.0

CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REF_LEN: Final = 8
_REF_READ: Final = str.maketrans({"O": "0", "I": "1", "L": "1"})
_EMAIL: Final = re.compile(
    r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f.]+(\.[^@\s\x00-\x1f\x7f.]+)+$"
)

TOTP_ISSUER: Final = "Clickacall"
TOTP_STEP: Final = 30
RECOVERY_CODES: Final = 10  # how many a member gets at once
RECOVERY_LEN: Final = 10

_hasher = PasswordHasher()  # argon2id
_DUMMY: Final = _hasher.hash("not a password anyone has: " + secrets.token_hex(8))


# --- passwords -------------------------------------------------------------------------------


def check_password(password: str) -> None:
    """ValueError (a ``PydanticCustomError``: a stable reason) with a message for the person
    choosing ``password``."""
    if len(password) < MIN_PASSWORD:
        raise PydanticCustomError(
            "password_too_short", "must be at least {min} characters", {"min": MIN_PASSWORD}
        )
    if len(password) > MAX_PASSWORD:
        raise PydanticCustomError(
            "password_too_long", "must be at most {max} characters", {"max": MAX_PASSWORD}
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise PydanticCustomError("password_control", "must not contain control characters")


def hash_password(password: str) -> str:
    """The argon2id hash (PHC string) of an acceptable password (see :func:`check_password`)."""
    check_password(password)
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; with no stored hash (no such account, not yet
    invited) a dummy one is checked, so both take as long."""
    if len(password) > MAX_PASSWORD:
        return False  # argon2 would hash it, at a cost the caller did not earn
    try:
        return _hasher.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True when ``stored`` was made with weaker parameters than today's."""
    try:
        return _hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def normalize_email(text: str) -> str:
    """A sign-in email, trimmed and lower-cased; ValueError if it is not one."""
    email = text.strip().lower()
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        raise PydanticCustomError(
            "email_invalid", "must be an email address such as name@example.com"
        )
    return email


# --- secrets ---------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh random secret for an invitation link or a session cookie."""
    return secrets.token_urlsafe(SECRET_BYTES)


def secret_hash(secret: str) -> str:
    """What is stored of a secret: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two texts (CSRF tokens)."""
    return hmac.compare_digest(a.encode(), b.encode())


# --- call references -------------------------------------------------------------------------


def new_call_ref() -> str:
    """A fresh random call reference, ``XXXX-XXXX`` (40 bits: unique per tenant in practice;
    the store's unique index catches the rare clash and the caller draws again)."""
    raw = "".join(secrets.choice(CROCKFORD) for _ in range(REF_LEN))
    return f"{raw[:4]}-{raw[4:]}"


def parse_call_ref(text: str) -> str:
    """A reference as a person typed it, in its stored form; ValueError if it is not one."""
    raw = re.sub(r"[\s-]", "", text.upper()).translate(_REF_READ)
    if len(raw) != REF_LEN or any(c not in CROCKFORD for c in raw):
        raise PydanticCustomError(
            "call_ref_invalid", "must be 8 letters and digits, such as K7Q2-M9XD"
        )
    return f"{raw[:4]}-{raw[4:]}"


# --- two-factor sign-in ---------------------------------------------------------------------


def new_totp_secret() -> str:
    """A fresh TOTP secret (base32, 160 bits)."""
    return pyotp.random_base32(32)


def totp_uri(secret: str, email: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads from the enrolment QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=TOTP_ISSUER)


def totp_code(secret: str, at: float) -> str:
    """The code an authenticator shows at ``at`` (tests and the enrolment check)."""
    return pyotp.TOTP(secret).at(int(at))


def totp_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code ``code`` is (the one of ``now``, or the step either side),
    or None if it is none of them."""
    code = re.sub(r"\s", "", code)
    if len(code) != 6 or not code.isascii() or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    step = int(now // TOTP_STEP)
    found = None
    for s in (step - 1, step, step + 1):  # every one compared: the time says nothing
        if hmac.compare_digest(totp.at(s * TOTP_STEP).encode(), code.encode()):
            found = s
    return found


def new_recovery_codes(n: int = RECOVERY_CODES) -> list[str]:
    """``n`` fresh recovery codes, as shown to the member once: ``ab3d7-k9m2x``."""
    out = []
    for _ in range(n):
        raw = "".join(secrets.choice(CROCKFORD) for _ in range(RECOVERY_LEN)).lower()
        out.append(f"{raw[:5]}-{raw[5:]}")
    return out


def recovery_hash(text: str) -> str | None:
    """What is stored of a recovery code as a person typed it (None: it is not one)."""
    raw = re.sub(r"[\s-]", "", text.upper()).translate(_REF_READ)
    if len(raw) != RECOVERY_LEN or any(c not in CROCKFORD for c in raw):
        return None
    return secret_hash(raw)


# --- the sign-in throttle --------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float


class Throttle:
    """Token buckets by key: ``burst`` tries at once, then one every ``interval`` seconds.

    :meth:`take` takes one try from every bucket of an attempt (say the email's and the
    prefix's) or from none: it returns 0 when the attempt may go ahead, or the seconds until
    it may (for ``Retry-After``). At most ``entries`` keys are remembered; past that the least
    recently used is forgotten (it refills to a full burst if seen again).
    """

    def __init__(self, burst: int = 5, interval: float = 20.0, entries: int = 10_000) -> None:
        if burst < 1 or interval <= 0 or entries < 1:
            raise ValueError("a throttle needs burst >= 1, interval > 0 and entries >= 1")
        self.burst = float(burst)
        self.interval = float(interval)
        self.entries = entries
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _bucket(
        self, key: str, now: float, burst: float | None = None, interval: float | None = None
    ) -> _Bucket:
        burst = self.burst if burst is None else burst
        interval = self.interval if interval is None else interval
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = _Bucket(burst, now)
            while len(self._buckets) > self.entries:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            b.level = min(burst, b.level + max(0.0, now - b.at) / interval)
            b.at = now
        return b

    def take(self, keys: list[str], now: float) -> float:
        buckets = [self._bucket(k, now) for k in dict.fromkeys(keys)]
        short = [b for b in buckets if b.level < 1.0]
        if short:
            return max((1.0 - b.level) * self.interval for b in short)
        for b in buckets:
            b.level -= 1.0
        return 0.0

    def take_rated(self, wants: list[tuple[str, float, float]], now: float) -> tuple[float, int]:
        """:meth:`take` with each bucket's own rate: ``(key, burst, interval)`` each (a
        tenant's limits differ). Returns (0, -1) when the attempt may go ahead, else the
        seconds until it may and the index in ``wants`` of the bucket that is shortest."""
        buckets = [self._bucket(k, now, burst, interval) for k, burst, interval in wants]
        waits = [max(0.0, 1.0 - b.level) * w[2] for b, w in zip(buckets, wants, strict=True)]
        if any(b.level < 1.0 for b in buckets):
            worst = max(range(len(waits)), key=waits.__getitem__)
            return waits[worst], worst
        for b in buckets:
            b.level -= 1.0
        return 0.0, -1

    def forgive(self, key: str) -> None:
        """Forget ``key`` (a successful sign-in clears its email's record)."""
        self._buckets.pop(key, None)

    def refund(self, key: str) -> None:
        """Give back the try an attempt that succeeded took from ``key`` (up to the burst): a
        network's bucket counts only the failures from it, so a whole office behind one
        address signs in at nine without waiting, while guessing from it is still slowed."""
        b = self._buckets.get(key)
        if b is not None:
            b.level = min(self.burst, b.level + 1.0)
