# Passive call quality: the RTP/RTCP header inspection the fast path runs on each packet it
# relays, into a table of per-SSRC flow rows that the engine owns (see _rtp.pyx).

from libc.stdint cimport int64_t, uint8_t

cdef enum:
    FLOWS_PER_DIR = 8      # SSRCs tracked per allocation and direction (a power of two)
    FLOWS_PER_SLOT = 16    # = 2 * FLOWS_PER_DIR
    NFLOW = 26             # int64 fields per flow row (FLOW_FIELDS)

# what inspect() made of a packet
cdef enum:
    SEEN_RTP = 0
    SEEN_RTCP = 1
    SEEN_OTHER = 2         # neither RTP nor RTCP (STUN, DTLS, junk): not tracked
    SEEN_OVERFLOW = 3      # RTP/RTCP of an SSRC beyond FLOWS_PER_DIR: not tracked

cdef int inspect(int64_t *flows, int slot, int d, const uint8_t *p, unsigned int n,
                 int64_t now) noexcept nogil
