# cython: language_level=3, freethreading_compatible=True
"""STUN (RFC 8489) message codec. Parses what strangers send: every length is checked."""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyObject_GetBuffer, PyBuffer_Release
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize
from cpython.bytes cimport PyBytes_GET_SIZE
from libc.stdint cimport uint32_t
from libc.string cimport memcpy, memset

from ext._wire cimport STUN_COOKIE, STUN_HEADER, load16, load32, store16, store32

import hmac as _hmac
import socket as _socket

_hmac_digest = _hmac.digest
_compare_digest = _hmac.compare_digest
_inet_pton = _socket.inet_pton
_inet_ntop = _socket.inet_ntop
_AF_INET = _socket.AF_INET
_AF_INET6 = _socket.AF_INET6

MAGIC_COOKIE = STUN_COOKIE
HEADER_SIZE = STUN_HEADER

# classes
REQUEST = 0
INDICATION = 1
SUCCESS = 2
ERROR = 3

# methods (RFC 8489, RFC 8656)
BINDING = 0x001
ALLOCATE = 0x003
REFRESH = 0x004
SEND = 0x006
DATA = 0x007
CREATE_PERMISSION = 0x008
CHANNEL_BIND = 0x009
CONNECT = 0x00A
CONNECTION_BIND = 0x00B
CONNECTION_ATTEMPT = 0x00C

# attributes, comprehension-required (< 0x8000)
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
CHANNEL_NUMBER = 0x000C
LIFETIME = 0x000D
XOR_PEER_ADDRESS = 0x0012
DATA_ATTR = 0x0013
REALM = 0x0014
NONCE = 0x0015
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_ADDRESS_FAMILY = 0x0017
EVEN_PORT = 0x0018
REQUESTED_TRANSPORT = 0x0019
DONT_FRAGMENT = 0x001A
MESSAGE_INTEGRITY_SHA256 = 0x001C
PASSWORD_ALGORITHM = 0x001D
USERHASH = 0x001E
XOR_MAPPED_ADDRESS = 0x0020
RESERVATION_TOKEN = 0x0022
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
CONNECTION_ID = 0x002A
# comprehension-optional (>= 0x8000)
ADDITIONAL_ADDRESS_FAMILY = 0x8000
ADDRESS_ERROR_CODE = 0x8001
PASSWORD_ALGORITHMS = 0x8002
ALTERNATE_DOMAIN = 0x8003
ICMP = 0x8004
SOFTWARE = 0x8022
ALTERNATE_SERVER = 0x8023
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A
RESPONSE_ORIGIN = 0x802B
OTHER_ADDRESS = 0x802C

# attribute types below this are comprehension-required (RFC 8489 14)
COMPREHENSION_OPTIONAL = 0x8000

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

cdef enum:
    _FP_XOR = 0x5354554E
    _A_MI = 0x0008
    _A_MI256 = 0x001C
    _A_FP = 0x8028


class StunError(ValueError):
    """A malformed STUN message (bad header, length, framing or attribute value)."""


cdef inline int type_method(uint32_t msg_type) noexcept nogil:
    # M11..M7 in bits 13..9, M6..M4 in bits 7..5, M3..M0 in bits 3..0
    return <int>((msg_type & 0x000F) | ((msg_type & 0x00E0) >> 1) | ((msg_type & 0x3E00) >> 2))


cdef inline int type_class(uint32_t msg_type) noexcept nogil:
    # C0 in bit 4, C1 in bit 8
    return <int>(((msg_type >> 4) & 1) | ((msg_type >> 7) & 2))


cdef inline uint32_t make_type(uint32_t method, uint32_t cls) noexcept nogil:
    return ((method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2)
            | ((cls & 1) << 4) | ((cls & 2) << 7))


cdef inline bint header_ok(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    # RFC 7983 first byte 0-3, magic cookie, and a length that is a multiple of 4 and
    # covers exactly the rest of the datagram.
    cdef uint32_t length
    if n < STUN_HEADER or p[0] > 3:
        return False
    if load32(p + 4) != STUN_COOKIE:
        return False
    length = load16(p + 2)
    return (length & 3) == 0 and <Py_ssize_t>length + STUN_HEADER == n


cdef uint32_t _crc_table[256]


cdef void _crc_init() noexcept nogil:
    cdef uint32_t c, i, _k
    for i in range(256):
        c = i
        for _k in range(8):
            c = (c >> 1) ^ 0xEDB88320U if c & 1 else c >> 1
        _crc_table[i] = c


_crc_init()


cdef uint32_t crc32(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    cdef uint32_t c = 0xFFFFFFFFU
    cdef Py_ssize_t i
    for i in range(n):
        c = _crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFFU


cdef inline int _need(Py_ssize_t have, Py_ssize_t need, str what) except -1:
    # the one bounds check everything goes through
    if have < need:
        raise StunError(f"{what}: need {need} bytes, have {have}")
    return 0


cdef inline int _fail(str what) except -1:
    raise StunError(what)


cdef inline bytes _as_bytes(object data):
    if PyBytes_Check(data):
        return <bytes>data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"expected bytes, not {type(data).__name__}")


cdef inline int _check_tid(object transaction_id) except -1:
    if not PyBytes_Check(transaction_id):
        raise TypeError("transaction_id must be bytes")
    if PyBytes_GET_SIZE(transaction_id) != 12:
        raise StunError("transaction_id must be 12 bytes")
    return 0


@cython.final
@cython.freelist(16)
cdef class Message:
    """A parsed STUN message. Attribute values are raw bytes without padding."""

    def __cinit__(self):
        self.integrity_offset = -1
        self.integrity256_offset = -1
        self.fingerprint_offset = -1

    def get(self, int attr_type):
        """The first attribute of that type, or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def has(self, int attr_type):
        for t, _ in self.attributes:
            if t == attr_type:
                return True
        return False

    def __repr__(self):
        return (f"<Message method=0x{self.method:03x} cls={self.cls} "
                f"tid={self.transaction_id.hex()} attrs={[hex(t) for t, _ in self.attributes]}>")


def is_stun(data):
    """Cheap check (RFC 7983 first byte 0-3, length, magic cookie), no allocation."""
    cdef Py_buffer view
    cdef bint ok
    if PyBytes_Check(data):
        return header_ok(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        ok = header_ok(<const unsigned char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return ok


def parse(data):
    """Parse a whole STUN message; StunError on anything malformed."""
    cdef bytes buf = _as_bytes(data)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t off, end, alen, padded
    cdef uint32_t msg_type, length, atype
    cdef int seen = 0  # 1: MESSAGE-INTEGRITY, 2: MESSAGE-INTEGRITY-SHA256, 3: FINGERPRINT
    cdef Message msg
    cdef list attrs

    _need(n, STUN_HEADER, "header")
    msg_type = load16(p)
    if msg_type & 0xC000:
        _fail("top two bits of the message type are not zero")
    if load32(p + 4) != STUN_COOKIE:
        _fail("bad magic cookie")
    length = load16(p + 2)
    if length & 3:
        _fail("message length is not a multiple of 4")
    if <Py_ssize_t>length != n - STUN_HEADER:
        _fail(f"message length {length} does not match the {n - STUN_HEADER} bytes given")

    msg = Message.__new__(Message)
    msg.method = type_method(msg_type)
    msg.cls = type_class(msg_type)
    msg.transaction_id = PyBytes_FromStringAndSize(<const char *>p + 8, 12)
    attrs = []

    off = STUN_HEADER
    end = n
    while off < end:
        _need(end - off, 4, "attribute header")
        atype = load16(p + off)
        alen = load16(p + off + 2)
        padded = (alen + 3) & ~3
        _need(end - off - 4, padded, "attribute value")
        if seen == 3:
            _fail("attribute after FINGERPRINT")
        if atype == _A_FP:
            if alen != 4:
                _fail("FINGERPRINT must be 4 bytes")
            if load32(p + off + 4) != (crc32(p, off) ^ _FP_XOR):
                _fail("FINGERPRINT mismatch")
            msg.fingerprint_offset = off
            seen = 3
        elif atype == _A_MI256:
            if seen >= 2:
                _fail("MESSAGE-INTEGRITY-SHA256 after MESSAGE-INTEGRITY-SHA256")
            if alen < 16 or alen > 32 or alen & 3:
                _fail("MESSAGE-INTEGRITY-SHA256 must be 16 to 32 bytes, a multiple of 4")
            msg.integrity256_offset = off
            seen = 2
        elif atype == _A_MI:
            if seen:
                _fail("MESSAGE-INTEGRITY after MESSAGE-INTEGRITY(-SHA256)")
            if alen != 20:
                _fail("MESSAGE-INTEGRITY must be 20 bytes")
            msg.integrity_offset = off
            seen = 1
        elif seen:
            _fail("attribute after MESSAGE-INTEGRITY(-SHA256)")
        attrs.append((atype, PyBytes_FromStringAndSize(<const char *>p + off + 4, alen)))
        off += 4 + padded

    msg.attributes = attrs
    return msg


cdef inline Py_ssize_t _padded(Py_ssize_t n) noexcept nogil:
    return (n + 3) & ~(<Py_ssize_t>3)


def encode(int method, int cls, transaction_id, attributes, key=None, *,
           bint sha256=False, bint fingerprint=True):
    """Build a message: attributes padded with zeros, then MESSAGE-INTEGRITY(-SHA256) when a key
    is given, then FINGERPRINT when asked. MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and
    FINGERPRINT are computed here and may not appear in ``attributes`` (StunError)."""
    cdef Py_ssize_t total = STUN_HEADER, off, vlen, mi_len = 0, mi_off = 0
    cdef bytes out, digest
    cdef unsigned char *q
    cdef long t
    cdef object item, value
    cdef list items = []  # validated snapshot: the second pass trusts it

    if method < 0 or method > 0xFFF:
        raise StunError("method must fit in 12 bits")
    if cls < 0 or cls > 3:
        raise StunError("class must be 0..3")
    _check_tid(transaction_id)
    for item in attributes:
        t, value = item
        if t < 0 or t > 0xFFFF:
            raise StunError("attribute type must fit in 16 bits")
        if t == _A_MI or t == _A_MI256 or t == _A_FP:
            raise StunError(f"attribute 0x{t:04x} is computed by encode, not given")
        if not PyBytes_Check(value):
            raise TypeError("attribute values must be bytes")
        vlen = PyBytes_GET_SIZE(value)
        if vlen > 0xFFFF:
            raise StunError("attribute value longer than 65535 bytes")
        total += 4 + _padded(vlen)
        items.append((t, value))
    if key is not None:
        mi_len = 32 if sha256 else 20
        total += 4 + mi_len
    if fingerprint:
        total += 8
    if total - STUN_HEADER > 0xFFFF:
        raise StunError("message longer than 65535 bytes")

    out = PyBytes_FromStringAndSize(NULL, total)
    q = <unsigned char *>PyBytes_AS_STRING(out)
    store16(q, make_type(<uint32_t>method, <uint32_t>cls))
    store16(q + 2, <uint32_t>(total - STUN_HEADER))
    store32(q + 4, STUN_COOKIE)
    memcpy(q + 8, PyBytes_AS_STRING(transaction_id), 12)
    off = STUN_HEADER
    for item in items:
        t, value = item
        vlen = PyBytes_GET_SIZE(value)
        store16(q + off, <uint32_t>t)
        store16(q + off + 2, <uint32_t>vlen)
        memcpy(q + off + 4, PyBytes_AS_STRING(value), vlen)
        memset(q + off + 4 + vlen, 0, _padded(vlen) - vlen)
        off += 4 + _padded(vlen)

    if key is not None:
        mi_off = off
        # RFC 8489 14.5/14.6: the length covers up to and including this attribute
        store16(q + 2, <uint32_t>(mi_off + 4 + mi_len - STUN_HEADER))
        digest = _hmac_digest(key, PyBytes_FromStringAndSize(<char *>q, mi_off),
                              "sha256" if sha256 else "sha1")
        store16(q + off, _A_MI256 if sha256 else _A_MI)
        store16(q + off + 2, <uint32_t>mi_len)
        memcpy(q + off + 4, PyBytes_AS_STRING(digest), mi_len)
        off += 4 + mi_len
        store16(q + 2, <uint32_t>(total - STUN_HEADER))

    if fingerprint:
        store16(q + off, _A_FP)
        store16(q + off + 2, 4)
        store32(q + off + 4, crc32(q, off) ^ _FP_XOR)
    return out


def check_integrity(data, Message msg not None, key):
    """Verify MESSAGE-INTEGRITY-SHA256 if present else MESSAGE-INTEGRITY against ``key``
    (the length field adjusted to end at that attribute). False when neither is present."""
    cdef bytes buf = _as_bytes(data)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t off, alen
    cdef bytes signed, expected
    cdef str algo
    if msg.integrity256_offset >= 0:
        off = msg.integrity256_offset
        algo = "sha256"
    elif msg.integrity_offset >= 0:
        off = msg.integrity_offset
        algo = "sha1"
    else:
        return False
    if off < STUN_HEADER:
        _fail("integrity offset inside the header")
    _need(n - off, 4, "integrity attribute header")
    alen = load16(p + off + 2)
    _need(n - off - 4, alen, "integrity attribute value")
    signed = PyBytes_FromStringAndSize(<const char *>p, off)
    store16(<unsigned char *>PyBytes_AS_STRING(signed) + 2,
            <uint32_t>(off + 4 + alen - STUN_HEADER))
    expected = _hmac_digest(key, signed, algo)
    if alen > PyBytes_GET_SIZE(expected):
        return False
    return _compare_digest(
        expected[:alen], PyBytes_FromStringAndSize(<const char *>p + off + 4, alen))


def fingerprint(data):
    """CRC-32 of ``data`` XOR 0x5354554e."""
    cdef bytes buf = _as_bytes(data)
    return crc32(<const unsigned char *>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf)) ^ _FP_XOR


cpdef bint comprehension_required(int attr_type) noexcept:
    """Attribute types below 0x8000 must be understood (RFC 8489 14)."""
    return attr_type < COMPREHENSION_OPTIONAL


def unknown_required(Message msg not None, known):
    """The comprehension-required attribute types in ``msg`` not in ``known``, in wire order,
    without duplicates: the UNKNOWN-ATTRIBUTES of a 420 answer."""
    cdef list out = []
    for t, _ in msg.attributes:
        if t < COMPREHENSION_OPTIONAL and t not in known and t not in out:
            out.append(t)
    return out


# --- addresses ---------------------------------------------------------------------------------

cdef bytes _pack_host(str host, int *family):
    try:
        raw = _inet_pton(_AF_INET, host)
        family[0] = 1
        return raw
    except (OSError, ValueError):
        pass
    try:
        raw = _inet_pton(_AF_INET6, host)
        family[0] = 2
        return raw
    except (OSError, ValueError):
        raise StunError(f"not an IPv4 or IPv6 address: {host!r}") from None


cdef bytes _address(str host, int port, object transaction_id, bint xor):
    cdef int family = 0
    cdef bytes raw, out
    cdef unsigned char *q
    cdef unsigned char mask[16]
    cdef Py_ssize_t i, alen
    if port < 0 or port > 0xFFFF:
        raise StunError("port must be 0..65535")
    raw = _pack_host(host, &family)
    alen = PyBytes_GET_SIZE(raw)
    out = PyBytes_FromStringAndSize(NULL, 4 + alen)
    q = <unsigned char *>PyBytes_AS_STRING(out)
    q[0] = 0
    q[1] = <unsigned char>family
    memcpy(q + 4, PyBytes_AS_STRING(raw), alen)
    if xor:
        store32(mask, STUN_COOKIE)
        memcpy(mask + 4, PyBytes_AS_STRING(transaction_id), 12)
        port ^= STUN_COOKIE >> 16
        for i in range(alen):
            q[4 + i] ^= mask[i]
    store16(q + 2, <uint32_t>port)
    return out


cdef tuple _unaddress(object value, object transaction_id, bint xor):
    cdef bytes buf = _as_bytes(value)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef unsigned char raw[16]
    cdef unsigned char mask[16]
    cdef int family, port
    cdef Py_ssize_t i, alen
    _need(n, 4, "address")
    family = p[1]
    if family == 1:
        alen = 4
    elif family == 2:
        alen = 16
    else:
        raise StunError(f"bad address family {family}")
    if n != 4 + alen:
        raise StunError(f"address of family {family} must be {4 + alen} bytes, not {n}")
    port = load16(p + 2)
    memcpy(raw, p + 4, alen)
    if xor:
        store32(mask, STUN_COOKIE)
        memcpy(mask + 4, PyBytes_AS_STRING(transaction_id), 12)
        port ^= STUN_COOKIE >> 16
        for i in range(alen):
            raw[i] ^= mask[i]
    host = _inet_ntop(_AF_INET if family == 1 else _AF_INET6,
                      PyBytes_FromStringAndSize(<char *>raw, alen))
    return (family, host, port)


def encode_xor_address(str host not None, int port, transaction_id):
    """XOR-MAPPED/XOR-PEER/XOR-RELAYED-ADDRESS value for an IPv4 or IPv6 textual host."""
    _check_tid(transaction_id)
    return _address(host, port, transaction_id, True)


def decode_xor_address(value, transaction_id):
    """(family 1|2, host, port) from an XOR-*-ADDRESS value; StunError if malformed."""
    _check_tid(transaction_id)
    return _unaddress(value, transaction_id, True)


def encode_address(str host not None, int port):
    """Plain (non-XOR) MAPPED-ADDRESS / ALTERNATE-SERVER value."""
    return _address(host, port, None, False)


def decode_address(value):
    return _unaddress(value, None, False)


# --- ERROR-CODE ----------------------------------------------------------------------------------

def encode_error_code(int code, str reason not None):
    """ERROR-CODE value: class (3..6) and number (0..99) split, UTF-8 reason of at most 763
    bytes (RFC 8489 14.8)."""
    cdef bytes text, out
    cdef unsigned char *q
    cdef Py_ssize_t tlen
    if code < 300 or code > 699:
        raise StunError("error code must be 300..699")
    text = reason.encode("utf-8")
    tlen = PyBytes_GET_SIZE(text)
    if tlen > 763:
        raise StunError("reason phrase longer than 763 bytes")
    out = PyBytes_FromStringAndSize(NULL, 4 + tlen)
    q = <unsigned char *>PyBytes_AS_STRING(out)
    q[0] = 0
    q[1] = 0
    q[2] = <unsigned char>(code // 100)
    q[3] = <unsigned char>(code % 100)
    memcpy(q + 4, PyBytes_AS_STRING(text), tlen)
    return out


def decode_error_code(value):
    """(code, reason) from an ERROR-CODE value. The class must be 3..6 and the number 0..99;
    a reason that is not valid UTF-8 is decoded with replacement characters."""
    cdef bytes buf = _as_bytes(value)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef int klass, number
    _need(n, 4, "ERROR-CODE")
    klass = p[2] & 7
    number = p[3]
    if klass < 3 or klass > 6 or number > 99:
        raise StunError(f"bad error code class {klass} number {number}")
    return (klass * 100 + number, buf[4:].decode("utf-8", "replace"))
