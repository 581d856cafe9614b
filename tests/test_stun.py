"""ext._stun: RFC 5769 vectors, framing rules, and differential tests against tests/stunref.py."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import itertools
import struct
import sys
import unicodedata
import zlib
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from ext import _stun as cy

try:
    import stunref as ref
except ImportError:  # tests/ became a package
    from tests import stunref as ref

CODECS = [pytest.param(cy, id="cython"), pytest.param(ref, id="ref")]

# --- RFC 5769 test vectors ----------------------------------------------------------------------
# Typed from the RFC's hex dumps; each one proves itself by its FINGERPRINT and MESSAGE-INTEGRITY.

PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# 2.1 Sample Request (padding bytes are 0x20, as the RFC has them)
SAMPLE_REQUEST = bytes.fromhex(
    "00010058 2112a442 b7e7a701 bc34d686 fa87dfae"
    "80220010 5354554e 20746573 7420636c 69656e74"  # SOFTWARE "STUN test client"
    "00240004 6e0001ff"  # PRIORITY
    "80290008 932ff9b1 51263b36"  # ICE-CONTROLLED
    "00060009 6576746a 3a683676 59202020"  # USERNAME "evtj:h6vY"
    "00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2"  # MESSAGE-INTEGRITY
    "80280004 e57a3bcf"  # FINGERPRINT
)

# 2.2 Sample IPv4 Response
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022000b 74657374 20766563 746f7220"  # SOFTWARE "test vector"
    "00200008 0001a147 e112a643"  # XOR-MAPPED-ADDRESS
    "00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7"
    "80280004 c07d4c96"
)

# 2.3 Sample IPv6 Response
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "01010048 2112a442 b7e7a701 bc34d686 fa87dfae"
    "8022000b 74657374 20766563 746f7220"
    "00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"
    "00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41"
    "80280004 c8fb0b4c"
)

# 2.4 Sample Request with Long-Term Authentication (zero padding, no FINGERPRINT)
LONG_TERM_REQUEST = bytes.fromhex(
    "00010060 2112a442 78ad3433 c6ad72c0 29da412e"
    "00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000"  # USERNAME
    "0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341"  # NONCE
    "0014000b 6578616d 706c652e 6f726700"  # REALM "example.org"
    "00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666"
)
LT_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # マトリックス
LT_PASSWORD_RAW = "The\u00adM\u00aatr\u2168"  # as the RFC gives it, before SASLprep
LT_REALM = "example.org"

VECTORS = [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE, LONG_TERM_REQUEST]


def saslprep_lite(s: str) -> str:
    # enough of RFC 4013 for the vector: map soft hyphen to nothing, then NFKC
    return unicodedata.normalize("NFKC", s.replace("\u00ad", ""))


def long_term_key(username: str, realm: str, password: str) -> bytes:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).digest()


LT_KEY = long_term_key(LT_USERNAME, LT_REALM, saslprep_lite(LT_PASSWORD_RAW))


def test_saslprep_of_the_vector_password() -> None:
    assert saslprep_lite(LT_PASSWORD_RAW) == "TheMatrIX"


@pytest.mark.parametrize("codec", CODECS)
def test_rfc5769_sample_request(codec: ModuleType) -> None:
    msg = codec.parse(SAMPLE_REQUEST)
    assert (msg.method, msg.cls, msg.transaction_id) == (0x001, 0, TID)
    assert msg.attributes[:4] == [
        (0x8022, b"STUN test client"),
        (0x0024, bytes.fromhex("6e0001ff")),
        (0x8029, bytes.fromhex("932ff9b151263b36")),
        (0x0006, b"evtj:h6vY"),
    ]
    assert [t for t, _ in msg.attributes[4:]] == [0x0008, 0x8028]
    assert (msg.integrity_offset, msg.integrity256_offset, msg.fingerprint_offset) == (76, -1, 100)
    assert msg.get(0x0006) == b"evtj:h6vY" and msg.get(0x0013) is None
    assert msg.has(0x8028) and not msg.has(0x001C)
    assert codec.check_integrity(SAMPLE_REQUEST, msg, PASSWORD)
    assert not codec.check_integrity(SAMPLE_REQUEST, msg, PASSWORD[:-1] + b"u")
    assert codec.fingerprint(SAMPLE_REQUEST[:100]) == 0xE57A3BCF
    assert codec.is_stun(SAMPLE_REQUEST)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("data", "host", "family", "fp"),
    [
        (SAMPLE_IPV4_RESPONSE, "192.0.2.1", 1, 0xC07D4C96),
        (SAMPLE_IPV6_RESPONSE, "2001:db8:1234:5678:11:2233:4455:6677", 2, 0xC8FB0B4C),
    ],
    ids=["ipv4", "ipv6"],
)
def test_rfc5769_responses(codec: ModuleType, data: bytes, host: str, family: int, fp: int) -> None:
    msg = codec.parse(data)
    assert (msg.method, msg.cls, msg.transaction_id) == (0x001, 2, TID)
    assert msg.get(0x8022) == b"test vector"
    assert codec.check_integrity(data, msg, PASSWORD)
    assert not codec.check_integrity(data, msg, b"wrong")
    assert codec.fingerprint(data[: msg.fingerprint_offset]) == fp
    xma = msg.get(0x0020)
    assert codec.decode_xor_address(xma, TID) == (family, host, 32853)
    assert codec.encode_xor_address(host, 32853, TID) == xma


@pytest.mark.parametrize("codec", CODECS)
def test_rfc5769_long_term_request(codec: ModuleType) -> None:
    msg = codec.parse(LONG_TERM_REQUEST)
    assert (msg.method, msg.cls) == (0x001, 0)
    assert msg.get(0x0006) == LT_USERNAME.encode()
    assert msg.get(0x0015) == b"f//499k954d6OL34oL9FSTvy64sA"
    assert msg.get(0x0014) == b"example.org"
    assert msg.fingerprint_offset == -1 and msg.integrity_offset == 92
    assert codec.check_integrity(LONG_TERM_REQUEST, msg, LT_KEY)
    # the unprepared password gives another key
    assert not codec.check_integrity(
        LONG_TERM_REQUEST, msg, long_term_key(LT_USERNAME, LT_REALM, LT_PASSWORD_RAW)
    )


def _zero_padding(data: bytes) -> bytes:
    out = bytearray(data)
    pos = 20
    while pos < len(out):
        (alen,) = struct.unpack_from("!H", out, pos + 2)
        pad = -alen % 4
        out[pos + 4 + alen : pos + 4 + alen + pad] = bytes(pad)
        pos += 4 + alen + pad
    return bytes(out)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("data", VECTORS, ids=["request", "ipv4", "ipv6", "long-term"])
def test_rfc5769_reencode(codec: ModuleType, data: bytes) -> None:
    msg = codec.parse(data)
    key = LT_KEY if data is LONG_TERM_REQUEST else PASSWORD
    plain = [(t, v) for t, v in msg.attributes if t not in (0x0008, 0x001C, 0x8028)]
    out = codec.encode(
        msg.method, msg.cls, msg.transaction_id, plain, key, fingerprint=msg.fingerprint_offset >= 0
    )
    if data is LONG_TERM_REQUEST:
        assert out == data  # zero padding in the RFC: byte for byte
    else:
        # the RFC pads with spaces and we pad with zeros; everything else matches and the
        # computed attributes are right for our bytes
        assert len(out) == len(data)
        assert out[: msg.integrity_offset] == _zero_padding(data)[: msg.integrity_offset]
    again = codec.parse(out)
    assert again.attributes[: len(plain)] == plain
    assert codec.check_integrity(out, again, key)


# --- framing rules (both codecs) ---------------------------------------------------------------


def tlv(atype: int, value: bytes, pad: bytes = b"\0") -> bytes:
    return struct.pack("!HH", atype, len(value)) + value + pad * (-len(value) % 4)


def raw(body: bytes, msg_type: int = 0x0001, length: int | None = None, tid: bytes = TID) -> bytes:
    n = len(body) if length is None else length
    return struct.pack("!HHI", msg_type, n, 0x2112A442) + tid + body


def fp_tlv(prefix_body: bytes, msg_type: int = 0x0001) -> bytes:
    """A correct FINGERPRINT attribute to append to raw(prefix_body)."""
    head = raw(prefix_body, msg_type, len(prefix_body) + 8)
    return tlv(0x8028, struct.pack("!I", zlib.crc32(head) ^ 0x5354554E))


def assemble(spec: list[tuple[int, int, bool]], tid: bytes = TID, pad: bytes = b"\0") -> bytes:
    """A message of (type, value length, right FINGERPRINT?) attributes. A FINGERPRINT made
    right is right for the final header length, wherever it stands, as a forger would make it."""
    total = sum(4 + n + (-n % 4) for _, n, _ in spec)
    body = b""
    for atype, alen, fix in spec:
        if atype == 0x8028 and alen == 4 and fix:
            crc = zlib.crc32(raw(body, tid=tid, length=total)) ^ 0x5354554E
            body += tlv(atype, struct.pack("!I", crc))
        else:
            body += tlv(atype, bytes(i & 0xFF for i in range(alen)), pad)
    return raw(body, tid=tid)


MI = tlv(0x0008, bytes(20))
MI256 = tlv(0x001C, bytes(32))
SOFT = tlv(0x8022, b"abc")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "data",
    [
        b"",
        raw(b"")[:19],
        raw(b"", msg_type=0x4001),
        raw(b"", msg_type=0x8001),
        raw(b"")[:4] + b"\x21\x12\xa4\x43" + TID,
        raw(b"\0\0\0\0\0\0", length=6),
        raw(SOFT, length=4),
        raw(SOFT, length=12),
        raw(SOFT) + b"\0\0\0\0",
        raw(struct.pack("!HH", 0x8022, 5) + b"abcd"),  # value runs past the end
        raw(struct.pack("!HH", 0x8022, 0xFFFF)),
        raw(MI + SOFT),  # attribute after MESSAGE-INTEGRITY
        raw(MI256 + SOFT),
        raw(MI + MI),
        raw(MI256 + MI),  # MESSAGE-INTEGRITY after MESSAGE-INTEGRITY-SHA256
        raw(MI256 + MI256),
        raw(tlv(0x0008, bytes(16))),
        raw(tlv(0x0008, bytes(24))),
        raw(tlv(0x001C, bytes(12))),
        raw(tlv(0x001C, bytes(36))),
        raw(tlv(0x001C, bytes(18))),
        raw(tlv(0x8028, b"\0\0\0\0")),  # wrong FINGERPRINT value
        raw(tlv(0x8028, bytes(8))),
        # attribute after a FINGERPRINT that is right for the whole message
        assemble([(0x8022, 3, False), (0x8028, 4, True), (0x8022, 3, False)]),
        assemble([(0x8022, 3, False), (0x8028, 4, True), (0x8028, 4, True)]),
        assemble([(0x8028, 4, True), (0x0008, 20, False)]),
    ],
)
def test_rejects(codec: ModuleType, data: bytes) -> None:
    with pytest.raises(codec.StunError):
        codec.parse(data)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "body",
    [
        b"",
        SOFT,
        SOFT + MI,
        SOFT + MI256,
        SOFT + MI + MI256,
        SOFT + tlv(0x001C, bytes(16)),
        SOFT + tlv(0x001C, bytes(20)),
        tlv(0x8022, b"x", pad=b"\xff"),  # padding content is not checked
        tlv(0x0013, b"") + tlv(0x0013, b"dup"),
    ],
)
def test_accepts(codec: ModuleType, body: bytes) -> None:
    for data in (raw(body), raw(body + fp_tlv(body))):
        msg = codec.parse(data)
        assert msg.fingerprint_offset == (len(data) - 8 if len(data) > len(body) + 20 else -1)
    assert sum(4 + len(v) + (-len(v) % 4) for _, v in codec.parse(raw(body)).attributes) == len(
        body
    )


@pytest.mark.parametrize("codec", CODECS)
def test_offsets(codec: ModuleType) -> None:
    body = SOFT + MI + MI256
    data = raw(body + fp_tlv(body))
    msg = codec.parse(data)
    assert msg.integrity_offset == 28
    assert msg.integrity256_offset == 52
    assert msg.fingerprint_offset == 88
    assert [t for t, _ in msg.attributes] == [0x8022, 0x0008, 0x001C, 0x8028]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("msg_type", "method", "cls"),
    [
        (0x0001, cy.BINDING, cy.REQUEST),
        (0x0101, cy.BINDING, cy.SUCCESS),
        (0x0111, cy.BINDING, cy.ERROR),
        (0x0011, cy.BINDING, cy.INDICATION),
        (0x0003, cy.ALLOCATE, cy.REQUEST),
        (0x0103, cy.ALLOCATE, cy.SUCCESS),
        (0x0113, cy.ALLOCATE, cy.ERROR),
        (0x0004, cy.REFRESH, cy.REQUEST),
        (0x0016, cy.SEND, cy.INDICATION),
        (0x0017, cy.DATA, cy.INDICATION),
        (0x0008, cy.CREATE_PERMISSION, cy.REQUEST),
        (0x0109, cy.CHANNEL_BIND, cy.SUCCESS),
        (0x0080, 0x040, cy.REQUEST),
        (0x3EEF, 0xFFF, cy.REQUEST),
        (0x3FFF, 0xFFF, cy.ERROR),
        (0x0110, 0x000, cy.ERROR),
    ],
)
def test_method_class_bits(codec: ModuleType, msg_type: int, method: int, cls: int) -> None:
    msg = codec.parse(raw(b"", msg_type))
    assert (msg.method, msg.cls) == (method, cls)
    out = codec.encode(method, cls, TID, [], fingerprint=False)
    assert out == raw(b"", msg_type)


def test_constants() -> None:
    assert cy.MAGIC_COOKIE == 0x2112A442 and cy.HEADER_SIZE == 20
    assert (cy.REQUEST, cy.INDICATION, cy.SUCCESS, cy.ERROR) == (0, 1, 2, 3)
    assert (cy.MESSAGE_INTEGRITY, cy.MESSAGE_INTEGRITY_SHA256, cy.FINGERPRINT) == (
        ref.MESSAGE_INTEGRITY,
        ref.MESSAGE_INTEGRITY_SHA256,
        ref.FINGERPRINT,
    )
    assert cy.XOR_MAPPED_ADDRESS == 0x0020 and cy.DATA_ATTR == 0x0013 and cy.DATA == 0x007
    assert cy.CONNECTION_ID == 0x002A and cy.OTHER_ADDRESS == 0x802C
    assert issubclass(cy.StunError, ValueError)


@pytest.mark.parametrize("codec", CODECS)
def test_comprehension(codec: ModuleType) -> None:
    assert codec.comprehension_required(0x0006)
    assert codec.comprehension_required(0x7FFF)
    assert not codec.comprehension_required(0x8000)
    assert not codec.comprehension_required(0x8022)
    msg = codec.parse(
        raw(tlv(0x7777, b"") + tlv(0x8888, b"") + tlv(0x0006, b"u") + tlv(0x7777, b""))
    )
    assert codec.unknown_required(msg, {0x0006}) == [0x7777]
    assert codec.unknown_required(msg, frozenset({0x0006, 0x7777})) == []


# --- is_stun ------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_is_stun(codec: ModuleType) -> None:
    for v in VECTORS:
        assert codec.is_stun(v)
        assert codec.is_stun(bytearray(v)) and codec.is_stun(memoryview(v))
        assert not codec.is_stun(v[:-4])
        assert not codec.is_stun(v + b"\0\0\0\0")
    assert not codec.is_stun(b"")
    assert not codec.is_stun(raw(b"")[:19])
    assert codec.is_stun(raw(b"", msg_type=0x03FF))
    assert not codec.is_stun(raw(b"", msg_type=0x0400))  # RFC 7983: first byte 0..3
    assert not codec.is_stun(raw(b"")[:4] + b"\x21\x12\xa4\x43" + TID)
    assert not codec.is_stun(b"\x40\x00\x00\x04abcd")  # ChannelData


def test_is_stun_does_not_allocate() -> None:
    data, bad = SAMPLE_REQUEST, SAMPLE_REQUEST[:-1]
    is_stun = cy.is_stun
    for _ in range(100):
        is_stun(data)
    before = sys.getallocatedblocks()
    for _ in range(10000):
        is_stun(data)
        is_stun(bad)
    assert sys.getallocatedblocks() - before < 10


# --- encode -------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_encode_layout(codec: ModuleType) -> None:
    out = codec.encode(cy.BINDING, cy.SUCCESS, TID, [(0x8022, b"x")], b"k", fingerprint=True)
    assert len(out) == 20 + 8 + 24 + 8
    assert out[20:28] == b"\x80\x22\x00\x01x\0\0\0"
    assert out[28:32] == b"\x00\x08\x00\x14" and out[52:56] == b"\x80\x28\x00\x04"
    msg = codec.parse(out)
    assert codec.check_integrity(out, msg, b"k") and not codec.check_integrity(out, msg, b"K")
    out = codec.encode(cy.BINDING, cy.REQUEST, TID, [], b"k", sha256=True, fingerprint=False)
    assert out[20:24] == b"\x00\x1c\x00\x20" and len(out) == 56
    msg = codec.parse(out)
    assert msg.integrity256_offset == 20 and codec.check_integrity(out, msg, b"k")
    # no integrity attribute: never verified
    out = codec.encode(cy.BINDING, cy.REQUEST, TID, [(0x0006, b"u")])
    assert not codec.check_integrity(out, codec.parse(out), b"k")


@pytest.mark.parametrize("codec", CODECS)
def test_check_integrity_truncated_sha256(codec: ModuleType) -> None:
    # MESSAGE-INTEGRITY-SHA256 may be truncated to 16..28 bytes: compare the prefix
    mac = hmac.new(b"k", raw(b"", length=20), "sha256").digest()[:16]
    data = raw(tlv(0x001C, mac))
    msg = codec.parse(data)
    assert codec.check_integrity(data, msg, b"k")
    assert not codec.check_integrity(data, msg, b"j")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("args", "exc"),
    [
        ((0x1000, 0, TID, []), "stun"),
        ((-1, 0, TID, []), "stun"),
        ((1, 4, TID, []), "stun"),
        ((1, 0, TID[:11], []), "stun"),
        ((1, 0, TID, [(0x10000, b"")]), "stun"),
        ((1, 0, TID, [(-1, b"")]), "stun"),
        ((1, 0, TID, [(0x0008, bytes(20))]), "stun"),
        ((1, 0, TID, [(0x001C, bytes(32))]), "stun"),
        ((1, 0, TID, [(0x8028, bytes(4))]), "stun"),
        ((1, 0, TID, [(0x0006, bytes(0x10000))]), "stun"),
        ((1, 0, TID, [(0x0006, bytes(0x8000)), (0x0006, bytes(0x8000))]), "stun"),
        ((1, 0, TID, [(0x0006, "text")]), "type"),
        ((1, 0, TID, [(0x0006, None)]), "type"),
        ((1, 0, "x" * 12, []), "type"),
    ],
)
def test_encode_rejects(codec: ModuleType, args: tuple[object, ...], exc: str) -> None:
    with pytest.raises(codec.StunError if exc == "stun" else TypeError):
        codec.encode(*args)


def test_encode_biggest() -> None:
    value = bytes(0xFFFF - 4 - 8)  # fits unpadded, but pads past 65535 with FINGERPRINT
    for codec in (cy, ref):
        with pytest.raises(codec.StunError):
            codec.encode(1, 0, TID, [(0x0006, value)])
    out = cy.encode(1, 0, TID, [(0x0006, bytes(0xFFFC - 4 - 8))])
    assert len(out) == 20 + 0xFFFC and cy.parse(out).fingerprint_offset == 20 + 0xFFFC - 8


# --- addresses and ERROR-CODE -------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_addresses(codec: ModuleType) -> None:
    assert codec.encode_address("192.0.2.1", 3478) == b"\x00\x01\x0d\x96\xc0\x00\x02\x01"
    assert codec.decode_address(b"\x00\x01\x0d\x96\xc0\x00\x02\x01") == (1, "192.0.2.1", 3478)
    v6 = codec.encode_address("2001:db8::1", 65535)
    assert v6[:4] == b"\x00\x02\xff\xff" and len(v6) == 20
    assert codec.decode_address(v6) == (2, "2001:db8::1", 65535)
    x = codec.encode_xor_address("::1", 0, TID)
    assert codec.decode_xor_address(x, TID) == (2, "::1", 0)
    assert codec.decode_xor_address(x, bytes(12))[1] != "::1"  # the transaction id matters


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\x01\x00",
        b"\x00\x01\x00\x00\x01\x02\x03",
        b"\x00\x01\x00\x00\x01\x02\x03\x04\x05",
        b"\x00\x02\x00\x00" + bytes(15),
        b"\x00\x02\x00\x00" + bytes(4),
        b"\x00\x03\x00\x00" + bytes(4),
        b"\x00\x00\x00\x00" + bytes(4),
    ],
)
def test_address_rejects(codec: ModuleType, value: bytes) -> None:
    with pytest.raises(codec.StunError):
        codec.decode_address(value)
    with pytest.raises(codec.StunError):
        codec.decode_xor_address(value, TID)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("example.org", 1),
        ("", 1),
        ("1.2.3", 1),
        ("01.2.3.4", 1),
        ("fe80::1%eth0", 1),
        ("1.2.3.4\x00", 1),
        ("1.2.3.4", -1),
        ("1.2.3.4", 65536),
    ],
)
def test_address_encode_rejects(codec: ModuleType, host: str, port: int) -> None:
    with pytest.raises(codec.StunError):
        codec.encode_address(host, port)
    with pytest.raises(codec.StunError):
        codec.encode_xor_address(host, port, TID)


@pytest.mark.parametrize("codec", CODECS)
def test_xor_address_needs_a_transaction_id(codec: ModuleType) -> None:
    with pytest.raises(codec.StunError):
        codec.encode_xor_address("1.2.3.4", 1, TID[:8])
    with pytest.raises(codec.StunError):
        codec.decode_xor_address(b"\x00\x01\x00\x00" + bytes(4), TID + b"\0")


@pytest.mark.parametrize("codec", CODECS)
def test_error_code(codec: ModuleType) -> None:
    assert codec.encode_error_code(401, "Unauthorized") == b"\x00\x00\x04\x01Unauthorized"
    assert codec.decode_error_code(b"\x00\x00\x04\x01Unauthorized") == (401, "Unauthorized")
    assert codec.decode_error_code(b"\xff\xff\xfc\x63") == (499, "")  # reserved bits ignored
    assert codec.decode_error_code(b"\x00\x00\x05\x00\xff") == (500, "\ufffd")
    assert codec.encode_error_code(699, "é" * 381)[4:] == "é".encode() * 381
    for bad in (
        b"",
        b"\x00\x00\x04",
        b"\x00\x00\x02\x00",
        b"\x00\x00\x07\x00",
        b"\x00\x00\x04\x64",
    ):
        with pytest.raises(codec.StunError):
            codec.decode_error_code(bad)
    for code, reason in ((299, ""), (700, ""), (400, "x" * 764), (400, "é" * 382)):
        with pytest.raises(codec.StunError):
            codec.encode_error_code(code, reason)


# --- differential: ext._stun against tests/stunref.py ------------------------------------------

COMPUTED = (0x0008, 0x001C, 0x8028)
KNOWN_TYPES = [0x0001, 0x0006, 0x0009, 0x000C, 0x0012, 0x0013, 0x0014, 0x0015, 0x0020, 0x8022]
tids = st.binary(min_size=12, max_size=12)
attr_types = st.one_of(st.sampled_from(KNOWN_TYPES), st.integers(0, 0xFFFF)).filter(
    lambda t: t not in COMPUTED
)
attr_lists = st.lists(st.tuples(attr_types, st.binary(max_size=40)), max_size=6)
keys = st.one_of(st.none(), st.binary(max_size=32))
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(codec: ModuleType, data: bytes) -> tuple[object, ...]:
    """What a codec makes of ``data``: only StunError may escape parse."""
    stun = codec.is_stun(data)
    try:
        msg = codec.parse(data)
    except codec.StunError:
        return ("rejected", stun)
    return (
        "parsed",
        stun,
        msg.method,
        msg.cls,
        msg.transaction_id,
        msg.attributes,
        msg.integrity_offset,
        msg.integrity256_offset,
        msg.fingerprint_offset,
        codec.check_integrity(data, msg, b"key"),
    )


def agree(data: bytes) -> tuple[object, ...]:
    a, b = outcome(cy, data), outcome(ref, data)
    assert a == b
    if currently_in_test_context():
        event(str(a[0]))
    if a[0] == "parsed":
        assert a[1] == (data[0] <= 3)  # a message parses: is_stun is the RFC 7983 byte check
    return a


@SETTINGS
@given(
    method=st.integers(0, 0xFFF),
    cls=st.integers(0, 3),
    tid=tids,
    attrs=attr_lists,
    key=keys,
    sha256=st.booleans(),
    fp=st.booleans(),
)
def test_diff_well_formed(
    method: int,
    cls: int,
    tid: bytes,
    attrs: list[tuple[int, bytes]],
    key: bytes | None,
    sha256: bool,
    fp: bool,
) -> None:
    a = cy.encode(method, cls, tid, attrs, key, sha256=sha256, fingerprint=fp)
    b = ref.encode(method, cls, tid, attrs, key, sha256=sha256, fingerprint=fp)
    assert a == b
    for data in (a, b):
        for parser in (cy, ref):
            msg = parser.parse(data)
            assert (msg.method, msg.cls, msg.transaction_id) == (method, cls, tid)
            assert msg.attributes[: len(attrs)] == attrs
            extra = [t for t, _ in msg.attributes[len(attrs) :]]
            assert extra == ([0x001C if sha256 else 0x0008] if key is not None else []) + (
                [0x8028] if fp else []
            )
            if key is not None:
                assert parser.check_integrity(data, msg, key)
                assert not parser.check_integrity(data, msg, key + b"!")
            if fp:
                assert parser.fingerprint(data[:-8]) == struct.unpack("!I", data[-4:])[0]
    agree(a)


@SETTINGS
@given(data=st.binary(max_size=120))
def test_diff_random_bytes(data: bytes) -> None:
    agree(data)


@SETTINGS
@given(
    msg_type=st.one_of(st.integers(0, 0x3FFF), st.integers(0, 0xFFFF)),
    tid=tids,
    body=st.binary(max_size=30).map(lambda b: b + bytes(-len(b) % 4)),
)
def test_diff_random_body(msg_type: int, tid: bytes, body: bytes) -> None:
    agree(raw(body, msg_type, tid=tid))


# A soup of TLVs mixing the computed attributes in every order and length, with FINGERPRINT
# values made right or left wrong, to reach the ordering and length rules.
soup_items = st.one_of(
    # right-sized computed attributes, in any order: the ordering rules
    st.tuples(st.sampled_from(COMPUTED), st.just(-1), st.just(True)),
    # computed attributes of every length around the limits: the length rules
    st.tuples(
        st.sampled_from(COMPUTED),
        st.sampled_from([0, 4, 8, 12, 15, 16, 18, 20, 24, 28, 32, 33, 36]),
        st.booleans(),
    ),
    st.tuples(attr_types, st.integers(0, 40), st.booleans()),
)
RIGHT_SIZE = {0x0008: 20, 0x001C: 32, 0x8028: 4}


@SETTINGS
@given(
    tid=tids,
    items=st.lists(soup_items, max_size=6),
    pad=st.sampled_from([b"\0", b" ", b"\xff"]),
)
def test_diff_attribute_soup(tid: bytes, items: list[tuple[int, int, bool]], pad: bytes) -> None:
    spec = [(t, RIGHT_SIZE[t] if n < 0 else n, fix) for t, n, fix in items]
    agree(assemble(spec, tid, pad))


TOKENS = [
    (0x8022, 3),
    (0x0006, 8),
    (0x0008, 20),
    (0x0008, 16),
    (0x0008, 24),
    (0x001C, 32),
    (0x001C, 16),
    (0x001C, 12),
    (0x001C, 18),
    (0x001C, 36),
    (0x8028, 4),  # FINGERPRINT with the right value
    (0x8028, -4),  # ... with a wrong one
    (0x8028, 8),
]


def test_diff_every_ordering() -> None:
    """Every sequence of up to three of TOKENS: the ordering and length rules, exhaustively."""
    seen = set()
    for n in range(4):
        for seq in itertools.product(TOKENS, repeat=n):
            data = assemble([(t, abs(n), n == 4) for t, n in seq], TID, b" ")
            seen.add(agree(data)[0])
    assert seen == {"parsed", "rejected"}


def mutate(data: bytes, draw: st.DrawFn) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "length", "refit", "insert"]))
        if kind == "flip" and out:
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and out:
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del out[draw(st.integers(0, len(out))) :]
        elif kind == "length" and len(out) >= 4:
            struct.pack_into("!H", out, 2, draw(st.integers(0, 0xFFFF)))
        elif kind == "refit" and len(out) >= 4:
            # make the header length agree again so the attribute walk is reached
            struct.pack_into("!H", out, 2, max(len(out) - 20, 0) & 0xFFFF)
        elif kind == "insert":
            i = draw(st.integers(0, len(out)))
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(out)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        data = draw(st.sampled_from(VECTORS))
    else:
        data = cy.encode(
            draw(st.integers(0, 0xFFF)),
            draw(st.integers(0, 3)),
            draw(tids),
            draw(attr_lists),
            draw(keys),
            sha256=draw(st.booleans()),
            fingerprint=draw(st.booleans()),
        )
    return mutate(data, draw)


@SETTINGS
@given(data=mutated_messages())
def test_diff_mutated(data: bytes) -> None:
    agree(data)


@SETTINGS
@given(data=st.sampled_from(VECTORS), cut=st.integers(0, 120))
def test_truncated_vectors_rejected(data: bytes, cut: int) -> None:
    if cut < len(data):
        assert agree(data[:cut])[0] == "rejected"


def same_address(a: tuple[int, str, int], b: tuple[int, str, int]) -> bool:
    return (a[0], ipaddress.ip_address(a[1]), a[2]) == (b[0], ipaddress.ip_address(b[1]), b[2])


@SETTINGS
@given(ip=st.ip_addresses(), port=st.integers(0, 0xFFFF), tid=tids)
def test_diff_address_roundtrip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, tid: bytes
) -> None:
    host = str(ip)
    family = 1 if ip.version == 4 else 2
    xa, xb = cy.encode_xor_address(host, port, tid), ref.encode_xor_address(host, port, tid)
    assert xa == xb
    pa, pb = cy.encode_address(host, port), ref.encode_address(host, port)
    assert pa == pb and pa[4:] == ip.packed
    for codec in (cy, ref):
        assert same_address(codec.decode_xor_address(xa, tid), (family, host, port))
        assert same_address(codec.decode_address(pa), (family, host, port))
    # inet_ntop's text for the address parses back to the same bytes
    assert cy.encode_address(cy.decode_address(pa)[1], port) == pa


def _decode_outcome(fn: Callable[..., object], *args: object) -> object:
    try:
        return fn(*args)
    except ValueError as e:
        assert isinstance(e, cy.StunError | ref.StunError), e
        return "rejected"


@SETTINGS
@given(value=st.binary(max_size=24), tid=tids)
def test_diff_address_decode(value: bytes, tid: bytes) -> None:
    for name, args in (("decode_address", (value,)), ("decode_xor_address", (value, tid))):
        a = _decode_outcome(getattr(cy, name), *args)
        b = _decode_outcome(getattr(ref, name), *args)
        assert (a == "rejected") == (b == "rejected")
        if a != "rejected":
            assert same_address(a, b)  # type: ignore[arg-type]


@SETTINGS
@given(
    host=st.one_of(st.text(max_size=40), st.ip_addresses().map(str)), port=st.integers(-2, 70000)
)
def test_diff_address_encode_text(host: str, port: int) -> None:
    a = _decode_outcome(cy.encode_address, host, port)
    b = _decode_outcome(ref.encode_address, host, port)
    assert a == b


@SETTINGS
@given(value=st.binary(max_size=12), code=st.integers(250, 750), reason=st.text(max_size=30))
def test_diff_error_code(value: bytes, code: int, reason: str) -> None:
    assert _decode_outcome(cy.decode_error_code, value) == _decode_outcome(
        ref.decode_error_code, value
    )
    a = _decode_outcome(cy.encode_error_code, code, reason)
    assert a == _decode_outcome(ref.encode_error_code, code, reason)
    if a != "rejected":
        assert cy.decode_error_code(a) == (code, reason)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_diff_fingerprint(data: bytes) -> None:
    assert cy.fingerprint(data) == ref.fingerprint(data) == zlib.crc32(data) ^ 0x5354554E
