"""A small pure-Python STUN (RFC 8489) codec, kept only as an oracle for ``ext._stun``.

Written from the RFC, not from the Cython code: same API shape and the same accept/reject
decisions, so hypothesis can run both side by side. Clarity over speed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from collections.abc import Container, Iterable

MAGIC_COOKIE = 0x2112A442
HEADER_SIZE = 20
REQUEST, INDICATION, SUCCESS, ERROR = 0, 1, 2, 3

MESSAGE_INTEGRITY = 0x0008
MESSAGE_INTEGRITY_SHA256 = 0x001C
FINGERPRINT = 0x8028
COMPREHENSION_OPTIONAL = 0x8000

_FINGERPRINT_XOR = 0x5354554E
_COMPUTED = (MESSAGE_INTEGRITY, MESSAGE_INTEGRITY_SHA256, FINGERPRINT)


class StunError(ValueError):
    """A malformed STUN message."""


class Message:
    def __init__(
        self, method: int, cls: int, transaction_id: bytes, attributes: list[tuple[int, bytes]]
    ) -> None:
        self.method = method
        self.cls = cls
        self.transaction_id = transaction_id
        self.attributes = attributes
        self.integrity_offset = -1
        self.integrity256_offset = -1
        self.fingerprint_offset = -1

    def get(self, attr_type: int) -> bytes | None:
        found = [v for t, v in self.attributes if t == attr_type]
        return found[0] if found else None

    def has(self, attr_type: int) -> bool:
        return any(t == attr_type for t, _ in self.attributes)


def _bytes(data: object) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"expected bytes, not {type(data).__name__}")


# The 14-bit message type spreads the method's bits around the two class bits:
#   bit: 13 12 11 10  9  8  7  6  5  4  3  2  1  0
#        M11 ...  M7 C1 M6 M5 M4 C0 M3 M2 M1 M0
_METHOD_BITS = [0, 1, 2, 3, 5, 6, 7, 9, 10, 11, 12, 13]  # type bit of method bit i
_CLASS_BITS = [4, 8]


def message_type(method: int, cls: int) -> int:
    t = 0
    for i, pos in enumerate(_METHOD_BITS):
        if method >> i & 1:
            t |= 1 << pos
    for i, pos in enumerate(_CLASS_BITS):
        if cls >> i & 1:
            t |= 1 << pos
    return t


def split_type(t: int) -> tuple[int, int]:
    method = sum(1 << i for i, pos in enumerate(_METHOD_BITS) if t >> pos & 1)
    cls = sum(1 << i for i, pos in enumerate(_CLASS_BITS) if t >> pos & 1)
    return method, cls


def fingerprint(data: bytes) -> int:
    return zlib.crc32(_bytes(data)) ^ _FINGERPRINT_XOR


def is_stun(data: bytes) -> bool:
    data = _bytes(data)
    if len(data) < HEADER_SIZE or data[0] not in (0, 1, 2, 3):
        return False
    _, length, cookie = struct.unpack_from("!HHI", data)
    return cookie == MAGIC_COOKIE and length % 4 == 0 and length == len(data) - HEADER_SIZE


def parse(data: bytes) -> Message:
    data = _bytes(data)
    if len(data) < HEADER_SIZE:
        raise StunError("short header")
    mtype, length, cookie = struct.unpack_from("!HHI", data)
    if mtype >> 14:
        raise StunError("top bits set")
    if cookie != MAGIC_COOKIE:
        raise StunError("cookie")
    if length % 4 or length != len(data) - HEADER_SIZE:
        raise StunError("length")
    msg = Message(*split_type(mtype), data[8:20], [])
    pos = HEADER_SIZE
    stage = "open"  # -> "mi" -> "mi256" -> "fp"
    while pos < len(data):
        if len(data) - pos < 4:
            raise StunError("attribute header truncated")
        atype, alen = struct.unpack_from("!HH", data, pos)
        value = data[pos + 4 : pos + 4 + alen]
        step = 4 + alen + (-alen % 4)
        if pos + step > len(data):
            raise StunError("attribute runs past the end")
        if stage == "fp":
            raise StunError("attribute after FINGERPRINT")
        if atype == FINGERPRINT:
            if alen != 4:
                raise StunError("FINGERPRINT length")
            if struct.unpack("!I", value)[0] != fingerprint(data[:pos]):
                raise StunError("FINGERPRINT value")
            msg.fingerprint_offset = pos
            stage = "fp"
        elif atype == MESSAGE_INTEGRITY_SHA256:
            if stage not in ("open", "mi"):
                raise StunError("MESSAGE-INTEGRITY-SHA256 out of place")
            if not (16 <= alen <= 32 and alen % 4 == 0):
                raise StunError("MESSAGE-INTEGRITY-SHA256 length")
            msg.integrity256_offset = pos
            stage = "mi256"
        elif atype == MESSAGE_INTEGRITY:
            if stage != "open":
                raise StunError("MESSAGE-INTEGRITY out of place")
            if alen != 20:
                raise StunError("MESSAGE-INTEGRITY length")
            msg.integrity_offset = pos
            stage = "mi"
        elif stage != "open":
            raise StunError("attribute after MESSAGE-INTEGRITY")
        msg.attributes.append((atype, value))
        pos += step
    return msg


def _tlv(atype: int, value: bytes) -> bytes:
    return struct.pack("!HH", atype, len(value)) + value + bytes(-len(value) % 4)


def _header(method: int, cls: int, body_len: int, tid: bytes) -> bytes:
    return struct.pack("!HHI", message_type(method, cls), body_len, MAGIC_COOKIE) + tid


def _check_tid(tid: object) -> None:
    if not isinstance(tid, bytes):
        raise TypeError("transaction_id must be bytes")
    if len(tid) != 12:
        raise StunError("transaction_id must be 12 bytes")


def encode(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: Iterable[tuple[int, bytes]],
    key: bytes | None = None,
    *,
    sha256: bool = False,
    fingerprint: bool = True,
) -> bytes:
    if not 0 <= method <= 0xFFF:
        raise StunError("method")
    if not 0 <= cls <= 3:
        raise StunError("class")
    _check_tid(transaction_id)
    body = b""
    for atype, value in attributes:
        if not 0 <= atype <= 0xFFFF:
            raise StunError("attribute type")
        if atype in _COMPUTED:
            raise StunError("computed attribute given")
        if not isinstance(value, bytes):
            raise TypeError("attribute value")
        if len(value) > 0xFFFF:
            raise StunError("attribute value too long")
        body += _tlv(atype, value)
    extra = (4 + (32 if sha256 else 20) if key is not None else 0) + (8 if fingerprint else 0)
    if len(body) + extra > 0xFFFF:
        raise StunError("message too long")
    if key is not None:
        algo, atype, size = (
            ("sha256", MESSAGE_INTEGRITY_SHA256, 32) if sha256 else ("sha1", MESSAGE_INTEGRITY, 20)
        )
        signed = _header(method, cls, len(body) + 4 + size, transaction_id) + body
        body += _tlv(atype, hmac.new(key, signed, algo).digest())
    if fingerprint:
        crc = zlib.crc32(_header(method, cls, len(body) + 8, transaction_id) + body)
        body += _tlv(FINGERPRINT, struct.pack("!I", crc ^ _FINGERPRINT_XOR))
    return _header(method, cls, len(body), transaction_id) + body


def check_integrity(data: bytes, msg: Message, key: bytes) -> bool:
    data = _bytes(data)
    if msg.integrity256_offset >= 0:
        pos, algo = msg.integrity256_offset, hashlib.sha256
    elif msg.integrity_offset >= 0:
        pos, algo = msg.integrity_offset, hashlib.sha1
    else:
        return False
    if pos < HEADER_SIZE or pos + 4 > len(data):
        raise StunError("integrity offset")
    (alen,) = struct.unpack_from("!H", data, pos + 2)
    if pos + 4 + alen > len(data):
        raise StunError("integrity value")
    signed = bytearray(data[:pos])
    struct.pack_into("!H", signed, 2, pos + 4 + alen - HEADER_SIZE)
    mac = hmac.new(key, bytes(signed), algo).digest()
    if alen > len(mac):
        return False
    return hmac.compare_digest(mac[:alen], data[pos + 4 : pos + 4 + alen])


def comprehension_required(attr_type: int) -> bool:
    return attr_type < COMPREHENSION_OPTIONAL


def unknown_required(msg: Message, known: Container[int]) -> list[int]:
    out: list[int] = []
    for t, _ in msg.attributes:
        if comprehension_required(t) and t not in known and t not in out:
            out.append(t)
    return out


def _xor_mask(tid: bytes | None) -> bytes:
    return struct.pack("!I", MAGIC_COOKIE) + tid if tid is not None else bytes(16)


def _encode_addr(host: str, port: int, tid: bytes | None) -> bytes:
    if not isinstance(host, str):
        raise TypeError("host must be str")
    if not 0 <= port <= 0xFFFF:
        raise StunError("port")
    try:
        if "%" in host:  # ipaddress takes a scope id, the wire has no room for one
            raise ValueError(host)
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise StunError(f"bad host {host!r}") from None
    family = 1 if ip.version == 4 else 2
    mask = _xor_mask(tid)
    raw = bytes(a ^ b for a, b in zip(ip.packed, mask, strict=False))
    if tid is not None:
        port ^= MAGIC_COOKIE >> 16
    return struct.pack("!BBH", 0, family, port) + raw


def _decode_addr(value: bytes, tid: bytes | None) -> tuple[int, str, int]:
    value = _bytes(value)
    if len(value) < 4:
        raise StunError("address too short")
    _, family, port = struct.unpack_from("!BBH", value)
    want = {1: 8, 2: 20}.get(family)
    if want is None:
        raise StunError("family")
    if len(value) != want:
        raise StunError("address length")
    mask = _xor_mask(tid)
    raw = bytes(a ^ b for a, b in zip(value[4:], mask, strict=False))
    if tid is not None:
        port ^= MAGIC_COOKIE >> 16
    ip = ipaddress.IPv4Address(raw) if family == 1 else ipaddress.IPv6Address(raw)
    # the text may differ from inet_ntop's for IPv4-mapped/compatible IPv6; compare parsed
    return family, str(ip), port


def encode_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    _check_tid(transaction_id)
    return _encode_addr(host, port, transaction_id)


def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[int, str, int]:
    _check_tid(transaction_id)
    return _decode_addr(value, transaction_id)


def encode_address(host: str, port: int) -> bytes:
    return _encode_addr(host, port, None)


def decode_address(value: bytes) -> tuple[int, str, int]:
    return _decode_addr(value, None)


def encode_error_code(code: int, reason: str) -> bytes:
    if not 300 <= code <= 699:
        raise StunError("error code")
    text = reason.encode("utf-8")
    if len(text) > 763:
        raise StunError("reason too long")
    return bytes([0, 0, code // 100, code % 100]) + text


def decode_error_code(value: bytes) -> tuple[int, str]:
    value = _bytes(value)
    if len(value) < 4:
        raise StunError("ERROR-CODE too short")
    klass, number = value[2] & 0x07, value[3]
    if not 3 <= klass <= 6 or number > 99:
        raise StunError("ERROR-CODE class/number")
    return klass * 100 + number, value[4:].decode("utf-8", "replace")
