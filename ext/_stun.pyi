"""STUN (RFC 8489) message codec, in Cython. Parses what strangers send: every length is checked."""

from collections.abc import Container
from typing import Final

MAGIC_COOKIE: Final[int]  # 0x2112A442

# classes (the two class bits of the message type, as 0..3)
REQUEST: Final[int]  # 0
INDICATION: Final[int]  # 1
SUCCESS: Final[int]  # 2
ERROR: Final[int]  # 3

HEADER_SIZE: Final[int]  # 20

# methods (RFC 8489, RFC 8656, RFC 6062)
BINDING: Final[int]  # 0x001
ALLOCATE: Final[int]  # 0x003
REFRESH: Final[int]  # 0x004
SEND: Final[int]  # 0x006
DATA: Final[int]  # 0x007
CREATE_PERMISSION: Final[int]  # 0x008
CHANNEL_BIND: Final[int]  # 0x009
CONNECT: Final[int]  # 0x00A
CONNECTION_BIND: Final[int]  # 0x00B
CONNECTION_ATTEMPT: Final[int]  # 0x00C

# attribute types below COMPREHENSION_OPTIONAL are comprehension-required (RFC 8489 14)
COMPREHENSION_OPTIONAL: Final[int]  # 0x8000
MAPPED_ADDRESS: Final[int]  # 0x0001
USERNAME: Final[int]  # 0x0006
MESSAGE_INTEGRITY: Final[int]  # 0x0008
ERROR_CODE: Final[int]  # 0x0009
UNKNOWN_ATTRIBUTES: Final[int]  # 0x000A
CHANNEL_NUMBER: Final[int]  # 0x000C
LIFETIME: Final[int]  # 0x000D
XOR_PEER_ADDRESS: Final[int]  # 0x0012
DATA_ATTR: Final[int]  # 0x0013 (DATA is the method)
REALM: Final[int]  # 0x0014
NONCE: Final[int]  # 0x0015
XOR_RELAYED_ADDRESS: Final[int]  # 0x0016
REQUESTED_ADDRESS_FAMILY: Final[int]  # 0x0017
EVEN_PORT: Final[int]  # 0x0018
REQUESTED_TRANSPORT: Final[int]  # 0x0019
DONT_FRAGMENT: Final[int]  # 0x001A
MESSAGE_INTEGRITY_SHA256: Final[int]  # 0x001C
PASSWORD_ALGORITHM: Final[int]  # 0x001D
USERHASH: Final[int]  # 0x001E
XOR_MAPPED_ADDRESS: Final[int]  # 0x0020
RESERVATION_TOKEN: Final[int]  # 0x0022
PRIORITY: Final[int]  # 0x0024
USE_CANDIDATE: Final[int]  # 0x0025
CONNECTION_ID: Final[int]  # 0x002A
ADDITIONAL_ADDRESS_FAMILY: Final[int]  # 0x8000
ADDRESS_ERROR_CODE: Final[int]  # 0x8001
PASSWORD_ALGORITHMS: Final[int]  # 0x8002
ALTERNATE_DOMAIN: Final[int]  # 0x8003
ICMP: Final[int]  # 0x8004
SOFTWARE: Final[int]  # 0x8022
ALTERNATE_SERVER: Final[int]  # 0x8023
FINGERPRINT: Final[int]  # 0x8028
ICE_CONTROLLED: Final[int]  # 0x8029
ICE_CONTROLLING: Final[int]  # 0x802A
RESPONSE_ORIGIN: Final[int]  # 0x802B
OTHER_ADDRESS: Final[int]  # 0x802C

# address families of (XOR-)MAPPED-ADDRESS and friends
FAMILY_IPV4: Final[int]  # 0x01
FAMILY_IPV6: Final[int]  # 0x02

class StunError(ValueError):
    """A malformed STUN message (bad header, length, framing or attribute value)."""

class Message:
    """A parsed STUN message. Attribute values are raw bytes without padding."""

    method: int  # 12-bit method, e.g. 0x001 Binding, 0x003 Allocate
    cls: int  # REQUEST / INDICATION / SUCCESS / ERROR
    transaction_id: bytes  # 12 bytes
    attributes: list[tuple[int, bytes]]  # in wire order, duplicates kept
    # byte offset of the MESSAGE-INTEGRITY / MESSAGE-INTEGRITY-SHA256 / FINGERPRINT attribute
    # header in the original buffer, or -1 when absent
    integrity_offset: int
    integrity256_offset: int
    fingerprint_offset: int

    def get(self, attr_type: int) -> bytes | None:
        """The first attribute of that type, or None."""
    def has(self, attr_type: int) -> bool: ...

def parse(data: bytes) -> Message:
    """Parse a whole STUN message. Raises StunError on anything malformed: short header, top two
    bits not zero, wrong magic cookie, length not a multiple of 4 or not matching the buffer,
    attribute running past the end, an attribute after FINGERPRINT, a bad FINGERPRINT value,
    or anything but FINGERPRINT after MESSAGE-INTEGRITY(-SHA256)."""

def is_stun(data: bytes) -> bool:
    """Cheap check (RFC 7983 first byte 0-3, length, magic cookie), no allocation."""

def encode(
    method: int,
    cls: int,
    transaction_id: bytes,
    attributes: list[tuple[int, bytes]],
    key: bytes | None = None,
    *,
    sha256: bool = False,
    fingerprint: bool = True,
) -> bytes:
    """Build a message: attributes padded to 4 bytes, then MESSAGE-INTEGRITY (HMAC-SHA1 with
    ``key``; MESSAGE-INTEGRITY-SHA256 instead when ``sha256``) when a key is given, then
    FINGERPRINT when asked."""

def check_integrity(data: bytes, msg: Message, key: bytes) -> bool:
    """Verify MESSAGE-INTEGRITY-SHA256 if present else MESSAGE-INTEGRITY against ``key``
    (RFC 8489 14.5/14.6: the length field adjusted to end at that attribute). False when
    neither is present. Constant-time comparison."""

def encode_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """XOR-MAPPED/XOR-PEER/XOR-RELAYED-ADDRESS value for an IPv4 or IPv6 textual host."""

def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[int, str, int]:
    """(family 1|2, host, port) from an XOR-*-ADDRESS value; StunError if malformed."""

def encode_address(host: str, port: int) -> bytes:
    """Plain (non-XOR) MAPPED-ADDRESS / ALTERNATE-SERVER value."""

def decode_address(value: bytes) -> tuple[int, str, int]: ...
def encode_error_code(code: int, reason: str) -> bytes:
    """ERROR-CODE value (class/number split, UTF-8 reason)."""

def decode_error_code(value: bytes) -> tuple[int, str]: ...
def fingerprint(data: bytes) -> int:
    """CRC-32 of ``data`` XOR 0x5354554e."""

# Additions beyond the first pinned API.
#
# encode() raises StunError when ``attributes`` holds MESSAGE-INTEGRITY,
# MESSAGE-INTEGRITY-SHA256 or FINGERPRINT (it computes those itself), for a method over 12 bits,
# a class outside 0..3, a transaction id not 12 bytes, an attribute type over 16 bits, or a value
# or message over 65535 bytes; TypeError for a value that is not bytes.
# encode_error_code() takes codes 300..699 and a reason of at most 763 UTF-8 bytes;
# decode_error_code() rejects a class outside 3..6 or a number over 99 and decodes the reason
# with replacement characters.

def comprehension_required(attr_type: int) -> bool:
    """True for attribute types below 0x8000: a receiver that does not know one must reject."""

def unknown_required(msg: Message, known: Container[int]) -> list[int]:
    """The comprehension-required attribute types of ``msg`` not in ``known``, in wire order,
    without duplicates: what a 420 answer lists in UNKNOWN-ATTRIBUTES."""
