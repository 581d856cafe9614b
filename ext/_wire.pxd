# Numbers of the wire formats that more than one extension reads or writes (STUN, ChannelData,
# RTP/RTCP), and the big-endian loads and stores their headers go through. Enums and inline
# helpers only: cimported, with no module behind them.

from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef enum:
    STUN_HEADER = 20              # RFC 8489 5: type, length, magic cookie, transaction id
    STUN_COOKIE = 0x2112A442
    CHANNEL_HEADER = 4            # ChannelData: channel number, length (RFC 8656 12.4)
    CHANNEL_MIN = 0x4000          # RFC 8656 channel numbers: 0x4000-0x4FFF
    CHANNEL_MAX = 0x4FFF
    CHANNEL_MAX_RFC5766 = 0x7FFF  # RFC 5766 allowed up to 0x7FFF; coturn's own tools use it
    RTP_HEADER = 12               # RFC 3550 5.1: the fixed header, before 4 bytes per CSRC
    RTCP_TYPE_MIN = 192           # RFC 5761 4: a second byte of 192-223 is an RTCP packet type
    RTCP_TYPE_MAX = 223


cdef inline uint16_t load16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])


cdef inline uint32_t load32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void store16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline void store32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>(v >> 16)
    p[2] = <uint8_t>(v >> 8)
    p[3] = <uint8_t>v


cdef inline bint is_rtcp(uint8_t second_byte) noexcept nogil:
    # RTCP shares the second byte with RTP's marker bit and payload type
    return RTCP_TYPE_MIN <= second_byte <= RTCP_TYPE_MAX
