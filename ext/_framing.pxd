# TURN framing for the fast path, done in place in the engine's receive buffers: telling STUN
# from ChannelData (RFC 7983), checking a client's ChannelData (RFC 8656 12.4), and writing a
# ChannelData header or a Data indication (RFC 8656 11.4) into the headroom in front of a
# payload. Inline helpers only: cimported by the engine, with no module behind them.

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

from ext._sys cimport AF_INET, ntohs, sockaddr_in, sockaddr_in6, sockaddr_storage
from ext._wire cimport (
    CHANNEL_HEADER, CHANNEL_MAX_RFC5766, CHANNEL_MIN, STUN_COOKIE, STUN_HEADER, load16,
    store16, store32,
)

cdef enum:
    DATA_INDICATION = 0x0017    # method Data (0x007), class indication
    XOR_PEER_ADDRESS = 0x0012
    DATA_ATTR = 0x0013
    # the longest Data indication header: STUN header, XOR-PEER-ADDRESS of an IPv6 peer
    # (4 + 20), DATA's type and length
    MAX_INDICATION_HEADER = 48


cdef inline bint is_stun(const uint8_t *p, unsigned int length) noexcept nogil:
    # RFC 7983: a first byte of 0-3 is STUN; the TURN core checks the rest
    return length >= 1 and p[0] < 4


cdef inline bint channel_data(const uint8_t *p, unsigned int length, uint16_t *chan,
                              uint16_t *dlen) noexcept nogil:
    """Whether the datagram ``p[0:length]`` is ChannelData whose length field fits in it
    (padding may follow); its channel number and payload length into ``chan``, ``dlen``."""
    # RFC 8656 numbers channels 0x4000-0x4FFF; RFC 5766 clients (coturn's own tools) still
    # use up to 0x7FFF, and nothing else arrives here with 0x50-0x7F
    if (length < CHANNEL_HEADER or p[0] < (CHANNEL_MIN >> 8)
            or p[0] > (CHANNEL_MAX_RFC5766 >> 8)):
        return False
    chan[0] = load16(p)
    dlen[0] = load16(p + 2)
    return <unsigned int>dlen[0] + CHANNEL_HEADER <= length


cdef inline uint8_t *channel_header(uint8_t *payload, uint16_t chan,
                                    unsigned int length) noexcept nogil:
    """Write a ChannelData header into the 4 bytes before ``payload``; returns its start."""
    cdef uint8_t *h = payload - CHANNEL_HEADER
    store16(h, chan)
    store16(h + 2, <uint16_t>length)
    return h


cdef inline uint8_t *data_indication(uint8_t *payload, unsigned int length,
                                     const sockaddr_storage *peer, const uint8_t *txn_prefix,
                                     uint32_t txn, unsigned int *total) noexcept nogil:
    """Frame ``payload[0:length]`` from ``peer`` as a Data indication: the header (STUN header
    with transaction id ``txn_prefix`` + ``txn``, XOR-PEER-ADDRESS, DATA's type and length)
    is written into the MAX_INDICATION_HEADER bytes before the payload and up to 3 zero bytes
    of padding after it (the buffer must have that room; ``length`` at most 0xFFFF - 64).
    Returns the message's start, its length in ``total``."""
    cdef unsigned int pad = (4 - (length & 3)) & 3
    cdef const sockaddr_in *a4
    cdef const sockaddr_in6 *a6
    cdef const uint8_t *addr
    cdef uint16_t port
    cdef uint8_t fam
    cdef int j, hl, alen
    cdef uint8_t *h
    memset(payload + length, 0, pad)
    if peer.ss_family == AF_INET:
        a4 = <const sockaddr_in *>peer
        alen, fam, port, addr = 4, 1, a4.sin_port, <const uint8_t *>&a4.sin_addr
    else:
        a6 = <const sockaddr_in6 *>peer
        alen, fam, port, addr = 16, 2, a6.sin6_port, <const uint8_t *>&a6.sin6_addr
    hl = STUN_HEADER + 8 + alen + 4
    h = payload - hl
    store16(h, DATA_INDICATION)
    store16(h + 2, <uint16_t>(hl - STUN_HEADER + length + pad))
    store32(h + 4, STUN_COOKIE)
    memcpy(h + 8, txn_prefix, 8)
    store32(h + 16, txn)
    store16(h + 20, XOR_PEER_ADDRESS)
    store16(h + 22, <uint16_t>(4 + alen))
    h[24] = 0
    h[25] = fam
    store16(h + 26, ntohs(port) ^ (STUN_COOKIE >> 16))
    # the address XORed with the cookie (and, for IPv6, the transaction id)
    for j in range(alen):
        h[28 + j] = addr[j] ^ h[4 + j]
    store16(h + 28 + alen, DATA_ATTR)
    store16(h + 30 + alen, <uint16_t>length)
    total[0] = hl + length + pad
    return h
