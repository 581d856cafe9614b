# STUN (RFC 8489) codec: the parsed message and the small header helpers other extensions
# (the fast path's demultiplexer) can cimport without touching Python objects.

from libc.stdint cimport uint16_t, uint32_t

cdef enum:
    STUN_HEADER_SIZE = 20
    STUN_COOKIE = 0x2112A442


cdef class Message:
    cdef readonly int method
    cdef readonly int cls
    cdef readonly bytes transaction_id
    cdef readonly list attributes
    cdef readonly Py_ssize_t integrity_offset
    cdef readonly Py_ssize_t integrity256_offset
    cdef readonly Py_ssize_t fingerprint_offset


cdef inline uint16_t load16(const unsigned char *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline uint32_t load32(const unsigned char *p) noexcept nogil:
    return ((<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16)
            | (<uint32_t>p[2] << 8) | <uint32_t>p[3])


cdef inline void store16(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>((v >> 8) & 0xFF)
    p[1] = <unsigned char>(v & 0xFF)


cdef inline void store32(unsigned char *p, uint32_t v) noexcept nogil:
    p[0] = <unsigned char>((v >> 24) & 0xFF)
    p[1] = <unsigned char>((v >> 16) & 0xFF)
    p[2] = <unsigned char>((v >> 8) & 0xFF)
    p[3] = <unsigned char>(v & 0xFF)


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
    if n < STUN_HEADER_SIZE or p[0] > 3:
        return False
    if load32(p + 4) != STUN_COOKIE:
        return False
    length = load16(p + 2)
    return (length & 3) == 0 and <Py_ssize_t>length + STUN_HEADER_SIZE == n


cdef uint32_t crc32(const unsigned char *p, Py_ssize_t n) noexcept nogil
