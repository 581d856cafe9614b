# Load generator over TCP and TLS for the relay benchmark: connections that carry TURN (the
# allocation made over them from Python, then paced ChannelData), with loss and round-trip
# accounting. Declarations only; the code is in _streamgen.pyx.

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from ext._ssl cimport SSL

cdef enum:
    MAX_STREAM_FLOWS = 64

# one connection's state, reachable without the GIL (the generator's loop holds pointers)
cdef struct Flow:
    int fd
    SSL *ssl                   # NULL: plain TCP
    uint8_t *rbuf              # what was read and not yet taken: rbuf[0:rlen]
    size_t rlen
    size_t rcap


cdef class StreamConn:
    """One client connection, TCP or TLS (OpenSSL's client side), non-blocking."""
    cdef Flow f
    cdef object owner          # the socket object: keeps the descriptor open


cdef class StreamGenerator:
    """Paced ChannelData over StreamConns (one per flow), one write per packet as browsers
    do; replies are parsed out of the streams and matched by sequence number."""
    cdef int nflows
    cdef list conns            # keeps the StreamConns (and so their Flows) alive
    cdef Flow *flows[MAX_STREAM_FLOWS]
    cdef unsigned int channels[MAX_STREAM_FLOWS]
    cdef int payload
    cdef uint32_t *rtt_buf
    cdef uint8_t *seen
    cdef uint64_t capacity
    cdef uint64_t nrtts

    cdef int _reserve(self, uint64_t count) except -1
